/// Comparing one table across nodes by primary key without moving it
/// (`mmlite diff`, `mmlite repair`, and apply's check that a table enters the
/// mesh identical everywhere). Pure: the SQL each node runs, and the decisions
/// taken from what the nodes answered. See docs/operations.md ("Are my nodes
/// identical?").
///
/// How: each node returns the row count and the exact sum of a 64-bit hash
/// of every row (order does not matter: one sequential scan, no
/// sort, no index), first for the whole table, then, if that differs, per
/// bucket (a power of two; a row's bucket is the low bits of its hash).
/// Buckets whose (count, sum) differ between nodes are narrowed to keys by
/// asking each node for the primary key and row hash of the rows of those
/// buckets only, a bounded batch at a time. The differing keys' rows are then
/// read by primary key.
public enum TableDiff {
    /// One column of the compared table.
    public struct Column: Sendable, Equatable {
        public var name: String
        public var type: String
        /// A generated column: compared, never written by repair.
        public var generated: Bool
        /// How the column enters the row hash when the table is hashed by value.
        public var hashing: Hashing
        public init(name: String, type: String, generated: Bool = false, hashing: Hashing = .text) {
            self.name = name
            self.type = type
            self.generated = generated
            self.hashing = hashing
        }
    }

    /// How a column's value is hashed. Only a value whose equality is
    /// identity may be hashed by its type's own hash function: numeric 1.5
    /// equals 1.50 and interval '1 day' equals '24 hours', so those are hashed
    /// by their exact binary form, and everything else (enums, whose hash is
    /// an OID that differs between nodes, jsonb, arrays, domains, extension
    /// types, text under a nondeterministic collation) by its text, as COPY
    /// writes it.
    public enum Hashing: Sendable, Equatable {
        /// The type's own extended hash function (inside one record hash).
        case value
        /// The hash of the bytes of the given send function's result.
        case binary(function: String)
        /// The hash of the column's text.
        case text

        /// Built-in types (pg_catalog) whose hash is exact: equal means the
        /// same bytes, and the hash is the same on every major from 14 on.
        static let exactTypes: Set<String> = [
            "int2", "int4", "int8", "oid", "bool", "char", "text", "varchar", "name", "bytea", "uuid",
            "date", "time", "timestamp", "timestamptz", "inet", "cidr", "macaddr", "macaddr8", "pg_lsn",
        ]
        static let binaryTypes: [String: String] = [
            "numeric": "numeric_send", "float4": "float4send", "float8": "float8send", "interval": "interval_send",
        ]

        /// `typeName`: pg_type.typname; `builtIn`: the type is in pg_catalog;
        /// `deterministic`: the column's collation is deterministic (or it has none).
        public static func of(typeName: String, builtIn: Bool, deterministic: Bool) -> Hashing {
            guard builtIn, deterministic else { return .text }
            if exactTypes.contains(typeName) { return .value }
            if let function = binaryTypes[typeName] { return .binary(function: function) }
            return .text
        }
    }

    /// The table as compared: its columns (in one node's order; every node
    /// uses the same order, so a different physical order does not matter)
    /// and its primary-key columns in key order.
    public struct Table: Sendable, Equatable {
        public var name: QualifiedName
        public var columns: [Column]
        public var key: [String]
        /// Hash columns by value (`Column.hashing`) rather than all by text:
        /// only when every compared node has `hash_record_extended` (14+),
        /// since every node must hash alike.
        public var byValue: Bool
        public init(name: QualifiedName, columns: [Column], key: [String], byValue: Bool = false) {
            self.name = name
            self.columns = columns
            self.key = key
            self.byValue = byValue
        }
    }

    /// The settings every comparing session uses, so that the row text a
    /// hash is taken of is the same on every node whatever its defaults.
    public static let sessionSettings = [
        "SET DateStyle = ISO, YMD", "SET IntervalStyle = postgres", "SET TimeZone = 'UTC'",
        "SET extra_float_digits = 1", "SET bytea_output = hex", "SET lc_monetary = 'C'", "SET search_path = ''",
    ]

    /// Rows per bucket aimed at: a differing bucket costs one batch read of
    /// about this many (key, hash) pairs per node.
    public static let rowsPerBucket: Int64 = 128
    public static let maximumBuckets = 65_536

    /// The number of buckets for a table of about `estimatedRows` rows (the
    /// largest estimate of any node): a power of two in 1...65536.
    public static func bucketCount(estimatedRows: Int64) -> Int {
        let wanted = max(1, estimatedRows / rowsPerBucket)
        var count = 1
        while Int64(count) < wanted && count < maximumBuckets { count *= 2 }
        return count
    }

    static func columnList(_ names: [String], alias: String? = nil) -> String {
        names.map { (alias.map { $0 + "." } ?? "") + SQL.identifier($0) }.joined(separator: ", ")
    }

    /// The 64-bit hash of a row. Columns hashed by text: each column's text
    /// (its type's output function, as in COPY) hashed with the column's own
    /// seed (its position in the table's column order), a NULL standing for a
    /// constant of its own, XORed together; hashing columns one by one avoids
    /// building the row's text. With `byValue`, the other columns go into one
    /// `hash_record_extended` of a row of them (a NULL field counts by its
    /// position), which skips the output functions: about a third of the
    /// cost of a scan (docs/performance.md).
    static func rowHash(_ table: Table, alias: String) -> String {
        var valued: [String] = []
        var parts: [String] = []
        for (index, column) in table.columns.enumerated() {
            let value = "\(alias).\(SQL.identifier(column.name))"
            switch table.byValue ? column.hashing : .text {
            case .value: valued.append(value)
            case .binary(let function): valued.append("pg_catalog.\(function)(\(value))")
            case .text: parts.append("coalesce(pg_catalog.hashtextextended((\(value))::text, \(index + 1)), \(-(index + 1)))")
            }
        }
        if !valued.isEmpty { parts.insert("pg_catalog.hash_record_extended(ROW(\(valued.joined(separator: ", "))), 0)", at: 0) }
        return "(" + parts.joined(separator: " # ") + ")"
    }

    /// The bucket of a row: the low bits of its row hash. A row that differs
    /// between two nodes lands in two buckets, which then both differ; the
    /// narrowing reads both and matches rows by key, so nothing is lost, and
    /// the summary pass hashes each row once.
    static func bucket(hash: String, buckets: Int) -> String {
        "(\(hash) & \(max(buckets, 1) - 1))::int4"
    }

    /// The key as a jsonb object, as text: the same on every node for the
    /// same key (jsonb orders its keys), and what reports show.
    static func keyJSON(_ table: Table, alias: String) -> String {
        "pg_catalog.jsonb_build_object(" + table.key.map { SQL.literal($0) + ", " + alias + "." + SQL.identifier($0) }.joined(separator: ", ") + ")::text"
    }

    /// Per bucket: `bucket`, `row_count`, `hash_sum`. With one
    /// bucket, the whole table's summary without grouping (the cheapest scan:
    /// the first look at a table, enough when it is identical).
    public static func summarySQL(_ table: Table, buckets: Int) -> String {
        // sum(bigint) accumulates in 128 bits: exact, and cheaper than any
        // split of the hash into int4 halves.
        let sums = "count(*) AS row_count, coalesce(sum(h), 0)::text AS hash_sum"
        let hashed = "(SELECT \(rowHash(table, alias: "r")) AS h FROM \(table.name.sql) AS r) AS x"
        if buckets <= 1 { return "SELECT 0 AS bucket, \(sums) FROM \(hashed)" }
        return "SELECT \(bucket(hash: "h", buckets: buckets)) AS bucket, \(sums) FROM \(hashed) GROUP BY 1"
    }

    /// The rows of some buckets (`$1`: an int4 array literal): `key`, `row_hash`.
    public static func bucketRowsSQL(_ table: Table, buckets: Int) -> String {
        """
        SELECT key, h AS row_hash FROM (SELECT \(keyJSON(table, alias: "r")) AS key, \(rowHash(table, alias: "r")) AS h FROM \(table.name.sql) AS r) AS x
        WHERE \(bucket(hash: "h", buckets: buckets)) = ANY ($1::int4[])
        """
    }

    /// The keys given as a jsonb array of key objects (`$1`), as a relation `k`.
    static func keysRelation(_ table: Table, parameter: String = "$1") -> String {
        "(SELECT \(columnList(table.key)) FROM pg_catalog.jsonb_populate_recordset(NULL::\(table.name.sql), \(parameter)::jsonb)) AS k"
    }

    static func keyMatch(_ table: Table, alias: String) -> String {
        table.key.map { "\(alias).\(SQL.identifier($0)) = k.\(SQL.identifier($0))" }.joined(separator: " AND ")
    }

    /// The rows of the keys in `$1` (a jsonb array of key objects): `key`,
    /// `row_hash`, `row` (jsonb as text). A key without a row has no line.
    public static func rowsSQL(_ table: Table) -> String {
        """
        SELECT \(keyJSON(table, alias: "r")) AS key, \(rowHash(table, alias: "r")) AS row_hash, pg_catalog.to_jsonb(r)::text AS row
        FROM \(table.name.sql) AS r JOIN \(keysRelation(table)) ON \(keyMatch(table, alias: "r"))
        """
    }

    /// The version rows of an opted-in table for the keys in `$1`: `key`,
    /// `version` (the whole version row as jsonb text).
    public static func versionsSQL(_ table: Table) -> String {
        let versions = ConflictSQL.versionTable(table.name).sql
        return """
        SELECT \(keyJSON(table, alias: "v")) AS key, pg_catalog.to_jsonb(v)::text AS version,
               v.v_ms AS v_ms, v.v_counter AS v_counter, v.v_node AS v_node
        FROM \(versions) AS v JOIN \(keysRelation(table)) ON \(keyMatch(table, alias: "v"))
        """
    }

    /// A jsonb array literal of keys (each already a JSON object's text).
    public static func keysParameter(_ keys: [String]) -> String { "[" + keys.joined(separator: ",") + "]" }

    // MARK: - Decisions

    /// One bucket's summary on one node.
    public struct Summary: Sendable, Equatable {
        public var rows: Int64
        /// The exact sum of the rows' 64-bit hashes, as the server's decimal text.
        public var sum: String
        public init(rows: Int64, sum: String) {
            self.rows = rows
            self.sum = sum
        }
        public static let empty = Summary(rows: 0, sum: "0")
    }

    /// Buckets whose summaries are not the same on every node (a bucket a
    /// node does not list is empty there), ascending.
    public static func differingBuckets(_ summaries: [String: [Int: Summary]]) -> [Int] {
        let all = Set(summaries.values.flatMap(\.keys))
        return all.filter { bucket in
            Set(summaries.values.map { $0[bucket] ?? .empty }.map { "\($0.rows) \($0.sum)" }).count > 1
        }.sorted()
    }

    /// Groups `buckets` into batches of at most about `limit` rows on the
    /// largest node (a bucket larger than the limit is a batch of its own).
    public static func batches(_ buckets: [Int], summaries: [String: [Int: Summary]], limit: Int64) -> [[Int]] {
        var result: [[Int]] = []
        var current: [Int] = []
        var size: Int64 = 0
        for bucket in buckets {
            let rows = summaries.values.map { $0[bucket]?.rows ?? 0 }.max() ?? 0
            if !current.isEmpty && size + rows > limit {
                result.append(current)
                current = []
                size = 0
            }
            current.append(bucket)
            size += rows
        }
        if !current.isEmpty { result.append(current) }
        return result
    }

    /// Keys whose row hash is not the same on every node (a node without the
    /// key counts as a difference), sorted. `hashes`: node → key → hash.
    public static func differingKeys(_ hashes: [String: [String: String]]) -> [String] {
        let keys = Set(hashes.values.flatMap(\.keys))
        return keys.filter { key in Set(hashes.values.map { $0[key] ?? "" }).count > 1 }.sorted()
    }

    /// Rows counted per node from the summaries.
    public static func rowCount(_ summaries: [Int: Summary]) -> Int64 {
        summaries.values.reduce(0) { $0 + $1.rows }
    }
}

/// The re-check of differing keys after every link caught up: only a key
/// that still differs, and that no node changed since the previous look, is a
/// difference; a key some node changed in between is looked at again.
public struct RecheckDecision: Sendable, Equatable {
    /// Keys that differ and were stable across two looks.
    public var confirmed: [String]
    /// Keys that differ but changed on some node since the last look.
    public var changing: [String]
    /// Keys that are now the same everywhere (a difference in flight).
    public var settled: [String]

    /// `previous` and `current`: node → key → row hash (a missing key: no row).
    /// `previous` nil: the first look, every differing key is `changing`.
    public static func judge(keys: [String], previous: [String: [String: String]]?, current: [String: [String: String]]) -> RecheckDecision {
        var decision = RecheckDecision(confirmed: [], changing: [], settled: [])
        for key in keys {
            let now = current.mapValues { $0[key] ?? "" }
            if Set(now.values).count <= 1 {
                decision.settled.append(key)
            } else if let previous, previous.mapValues({ $0[key] ?? "" }) == now {
                decision.confirmed.append(key)
            } else {
                decision.changing.append(key)
            }
        }
        return decision
    }
}

/// apply's and doctor's judgement of a table about to be wired into the
/// mesh: it must hold the same rows on every node (or be empty everywhere),
/// or the mesh starts diverged and stays so.
public enum ContentCheck {
    /// What one node says about a table.
    public struct Facts: Sendable, Equatable {
        public var empty: Bool
        public var rowEstimate: Int64
        /// The bucket summaries (nil: not computed, e.g. skipped).
        public var summary: [Int: TableDiff.Summary]?
        public init(empty: Bool, rowEstimate: Int64, summary: [Int: TableDiff.Summary]? = nil) {
            self.empty = empty
            self.rowEstimate = rowEstimate
            self.summary = summary
        }
    }

    /// Whether the hash pass is needed after the cheap one: only when every
    /// node holds rows (an empty table everywhere is identical; empty here
    /// and not there differs).
    public static func needsHashes(_ facts: [String: Facts]) -> Bool {
        !facts.isEmpty && facts.values.allSatisfy { !$0.empty }
    }

    /// The check result for `table` (`node` nil: mesh-wide). `running`: the
    /// mesh already runs (the table is being added to it), which changes the way out.
    public static func judge(_ table: QualifiedName, facts: [String: Facts], nodes: [String], running: Bool,
                             hashSkipped: Bool) -> CheckResult {
        let present = nodes.filter { facts[$0] != nil }
        let holding = present.filter { facts[$0]?.empty == false }
        let empty = present.filter { facts[$0]?.empty == true }
        func estimate(_ node: String) -> String {
            let rows = facts[node]?.rowEstimate ?? 0
            return rows > 0 ? "\(node) (about \(rows) rows)" : node
        }
        let unread = nodes.filter { facts[$0] == nil }
        if !unread.isEmpty {
            return CheckResult(node: nil, check: "content", status: .warning,
                               message: "\(table.sql) could not be read on \(unread.joined(separator: ", ")): its contents were not compared (mmlite diff --table \(table.sql) says why)")
        }
        if holding.isEmpty {
            return CheckResult(node: nil, check: "content", status: .pass, message: "\(table.sql): empty on every node")
        }
        let source = holding.max { (facts[$0]?.rowEstimate ?? 0) < (facts[$1]?.rowEstimate ?? 0) } ?? holding[0]
        if !empty.isEmpty {
            return CheckResult(node: nil, check: "content", status: .failure,
                               message: "\(table.sql) holds rows on \(holding.map(estimate).joined(separator: ", ")) but is empty on \(empty.joined(separator: ", ")): wired like this, the nodes would stay different",
                               fix: wayOut(table, source: source, running: running))
        }
        if hashSkipped {
            return CheckResult(node: nil, check: "content", status: .warning,
                               message: "\(table.sql) holds rows on every node; contents not compared (--skip-hash-check): make sure they are identical (mmlite diff --table \(table.sql))")
        }
        let summaries = Dictionary(uniqueKeysWithValues: present.compactMap { node in facts[node]?.summary.map { (node, $0) } })
        guard summaries.count == present.count else {
            return CheckResult(node: nil, check: "content", status: .warning, message: "\(table.sql): contents not compared on every node")
        }
        let differing = TableDiff.differingBuckets(summaries)
        let counts = present.map { "\($0) \(TableDiff.rowCount(summaries[$0] ?? [:]))" }.joined(separator: ", ")
        if differing.isEmpty {
            return CheckResult(node: nil, check: "content", status: .pass, message: "\(table.sql): identical on every node (rows: \(counts))")
        }
        return CheckResult(node: nil, check: "content", status: .failure,
                           message: "\(table.sql) differs between the nodes (rows: \(counts); \(differing.count) of its key ranges differ): wired like this, the nodes would stay different (mmlite diff --table \(table.sql) lists the keys)",
                           fix: wayOut(table, source: source, running: running))
    }

    /// doctor's judgement while a one-node mesh (only `source` has the
    /// publication, no subscription yet) is to grow by `mmlite join`, which
    /// copies `source`'s rows: a difference is then expected, and only `apply`
    /// (which would wire the others without copying) must refuse it.
    public static func beforeJoin(_ result: CheckResult, source: String) -> CheckResult {
        guard result.status == .failure else { return result }
        var warning = result
        warning.status = .warning
        warning.message += "; expected if the other nodes are to join the one-node mesh on \(source): `mmlite join NODE --from \(source)` copies its rows (`mmlite apply` would wire them without copying, and refuses)"
        return warning
    }

    /// How to wire a table whose nodes differ, without losing anything.
    public static func wayOut(_ table: QualifiedName, source: String, running: Bool) -> String {
        if running {
            return "\(table.sql) is not replicated yet, so writes to it stay on their node. Stop writing to it, make every node hold what \(source) holds with `mmlite repair --table \(table.sql) --from \(source)` (it copies the differing rows only), then run `mmlite apply` again"
        }
        return "build the mesh from the node that holds the data and join the others, which copies it exactly: list only \(source) in the nodes, `mmlite apply`, then add the others back and `mmlite join NODE --from \(source)` each (with --force where NODE holds rows); or make them identical first with `mmlite repair --table \(table.sql) --from \(source)` and run `mmlite apply` again"
    }

    /// The tables apply is about to wire: every mesh table while the mesh does
    /// not run yet, else those some member does not publish in any form
    /// (`forms`: the table and its change table: a table that opts in to
    /// conflict handling, or leaves it, changes form but is replicated already).
    public static func tablesToWire(_ tables: [QualifiedName], states: [String: NodeState], members: [String], running: Bool,
                                    forms: (QualifiedName) -> [QualifiedName]) -> [QualifiedName] {
        guard running else { return tables }
        return tables.filter { table in
            members.contains { member in
                guard let publication = states[member]?.publication else { return true }
                return !publication.allTables && !forms(table).contains { publication.tables.contains($0) }
            }
        }
    }
}

/// Whether every link between the compared nodes has caught up: each
/// publisher's slots for the other compared nodes confirmed past the
/// position the publisher had when the comparison looked (`marks`).
public enum CatchUp {
    /// The links still behind, as "n1 -> n2 (1.2 kB to go)"; `slots`:
    /// publisher → subscriber → the slot's confirmed_flush_lsn (nil: no
    /// position). Links whose slot does not exist are not waited for (the
    /// mesh does not run there, or not yet).
    public static func behind(marks: [String: LSN], slots: [String: [String: LSN?]], nodes: [String]) -> [String] {
        var result: [String] = []
        for publisher in nodes {
            guard let mark = marks[publisher] else { continue }
            for subscriber in nodes where subscriber != publisher {
                guard let entry = slots[publisher]?[subscriber] else { continue }
                guard let confirmed = entry else {
                    result.append("\(publisher) -> \(subscriber) (no confirmed position yet)")
                    continue
                }
                if confirmed < mark {
                    result.append("\(publisher) -> \(subscriber) (\(formatBytes(mark.bytes(since: confirmed))) to go)")
                }
            }
        }
        return result
    }
}
