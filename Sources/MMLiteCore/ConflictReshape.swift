/// Conflict handling following a schema change (`mmlite ddl`): run in the
/// migration's own transaction, after its statements, on every node.
extension ConflictSQL {
    /// Brings an opted-in table's change and version tables to the table's
    /// new columns (`table`, read inside the migration's transaction), given
    /// the change table's user columns and the version table's key columns as
    /// they are; then `install` re-creates the functions and triggers for the
    /// new columns and adds the change table's new ones. Rows of the change
    /// table are never read again once sent, so its columns can change freely.
    public static func reshape(_ table: Table, changeColumns: [Column], versionColumns: [Column], node: String) throws -> String {
        try validate(table)
        let versionKeys = versionColumns.filter { !versionMetaColumns.contains($0.name) && !lifeVersionColumns.contains($0.name) }
        let writable = Dictionary(table.columns.filter { !$0.generated }.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let keys = table.keyColumns
        guard versionKeys.isEmpty || versionKeys.map(\.name) == keys.map(\.name) else {
            throw GenerationError(message: "\(table.name.sql): mmlite ddl cannot rename or change the primary key of a table that opts in to conflict handling (its versions are kept per key); take it out of conflict handling first")
        }
        var sql: [String] = []
        let changes = changeTable(table.name).sql
        // Delta columns' change-table columns are install's (it drops stale ones).
        let deltaColumns = Set(lifeChangeColumns + table.deltaColumns.map(deltaChangeColumn))
        for column in changeColumns where !changeMetaColumns.contains(column.name) && !deltaColumns.contains(column.name) {
            guard let now = writable[column.name] else {
                sql.append("ALTER TABLE \(changes) DROP COLUMN \(SQL.identifier(column.name));")
                continue
            }
            if now.type != column.type {
                sql.append("ALTER TABLE \(changes) ALTER COLUMN \(SQL.identifier(column.name)) TYPE \(now.type) USING NULL;")
            }
        }
        let versions = versionTable(table.name).sql
        for (old, key) in zip(versionKeys, keys) where old.type != key.type {
            sql.append("ALTER TABLE \(versions) ALTER COLUMN \(SQL.identifier(key.name)) TYPE \(key.type) USING \(SQL.identifier(key.name))::\(key.type);")
        }
        sql.append(try install(table, node: node))
        sql.append(register(table))
        return sql.joined(separator: "\n")
    }

    /// Removes conflict handling of a table the migration dropped.
    public static func drop(registryName: String, table: QualifiedName) -> String {
        """
        DROP TABLE IF EXISTS \(changeTable(table).sql), \(versionTable(table).sql), \(livesTable(table).sql);
        DROP FUNCTION IF EXISTS \(function(table, "capture").sql)(), \(function(table, "apply").sql)();
        DELETE FROM mmlite.conflict_tables WHERE table_name = \(SQL.literal(registryName));
        """
    }

    /// The user columns of a change table, or the key columns of a version
    /// table, as the catalog has them ($1: the table); names and types only.
    public static let storedColumns = """
        SELECT a.attname AS column_name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """
}
