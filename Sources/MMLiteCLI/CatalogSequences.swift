import MMLiteCore
import PostgresClient

/// The catalog reads of sequence offsets (docs/sequences.md).
extension Catalog {
    /// This mesh's rows of `mmlite.sequence_offsets`; nil when the table does not exist.
    func sequenceOffsets(mesh: String) throws -> [SequenceOffset]? {
        guard try connection.query("SELECT pg_catalog.to_regclass('mmlite.sequence_offsets') IS NOT NULL AS present").first?.bool("present") == true
        else { return nil }
        return try connection.query("""
            SELECT o.node AS node, o.node_offset AS node_offset, o.retired AS retired
            FROM mmlite.sequence_offsets o WHERE o.mesh = $1 ORDER BY o.node_offset
            """, [mesh]).named.compactMap { row in
            guard let node = row["node"], let offset = row.int("node_offset") else { return nil }
            return SequenceOffset(node: node, offset: offset, retired: row.bool("retired") ?? false)
        }
    }

    /// What `mmlite.node_offset()` returns; nil when it is not installed.
    func nodeOffset() throws -> Int? {
        guard try connection.query("SELECT pg_catalog.to_regprocedure('mmlite.node_offset()') IS NOT NULL AS present").first?.bool("present") == true
        else { return nil }
        return try connection.query("SELECT mmlite.node_offset() AS node_offset").first?.int("node_offset")
    }

    /// The sequences feeding columns of `tables`: serial and identity
    /// columns (the sequence depends on the column) and defaults that call
    /// nextval (the default depends on the sequence), from pg_depend.
    /// `readMaximum` says for which the column's largest value is read (a
    /// conversion needs it; it may scan the table).
    func meshSequences(_ tables: [QualifiedName], readMaximum: (MeshSequence) -> Bool = { _ in false }) throws -> [MeshSequence] {
        guard !tables.isEmpty else { return [] }
        let rows = try connection.query("""
            SELECT n.nspname AS schema_name, c.relname AS table_name, a.attname AS column_name,
                   pg_catalog.format_type(a.atttypid, a.atttypmod) AS column_type,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY (i.indkey)) AS is_key,
                   sn.nspname AS sequence_schema, sc.relname AS sequence_name,
                   s.seqincrement AS increment, s.seqstart AS start_value, s.seqmin AS min_value, s.seqmax AS max_value,
                   CASE WHEN pg_catalog.has_sequence_privilege(sc.oid, 'SELECT,USAGE') THEN pg_catalog.pg_sequence_last_value(sc.oid) END AS last_value
            FROM (SELECT d.refobjid AS sequence_oid, ad.adrelid AS table_oid, ad.adnum AS column_number
                  FROM pg_catalog.pg_attrdef ad
                  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid
                                             AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  UNION
                  SELECT d.objid, d.refobjid, d.refobjsubid
                  FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                    AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0) x
            JOIN pg_catalog.pg_class c ON c.oid = x.table_oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_catalog.pg_attribute a ON a.attrelid = x.table_oid AND a.attnum = x.column_number AND NOT a.attisdropped
            JOIN pg_catalog.pg_class sc ON sc.oid = x.sequence_oid AND sc.relkind = 'S'
            JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace
            JOIN pg_catalog.pg_sequence s ON s.seqrelid = sc.oid
            WHERE c.oid IN (SELECT pg_catalog.to_regclass(t) FROM pg_catalog.unnest($1::text[]) t)
            ORDER BY n.nspname, c.relname, a.attnum
            """, [arrayLiteral(tables.map(\.sql))]).named
        var sequences: [MeshSequence] = []
        for row in rows {
            guard let table = Self.qualifiedName(row), let column = row["column_name"],
                  let schema = row["sequence_schema"], let name = row["sequence_name"] else { continue }
            var sequence = MeshSequence(table: table, column: column, columnType: row["column_type"] ?? "", isKey: row.bool("is_key") ?? false,
                                        sequence: QualifiedName(schema: schema, name: name),
                                        increment: row.int64("increment") ?? 1, start: row.int64("start_value") ?? 1,
                                        minValue: row.int64("min_value") ?? 1, maxValue: row.int64("max_value") ?? Int64.max,
                                        lastValue: row.int64("last_value"))
            if readMaximum(sequence) {
                sequence.columnMax = try connection.query(
                    "SELECT max(\(SQL.identifier(column)))::pg_catalog.int8::pg_catalog.text AS highest FROM \(table.sql)").first?.int64("highest")
            }
            sequences.append(sequence)
        }
        return sequences
    }
}
