/// `mmlite repair`: which node's row each differing key takes, what each
/// other node must change, and the SQL of those changes. Pure.
///
/// Every change on a node is made in one transaction that carries a
/// replication origin (so no output plugin forwards it: the repair does not
/// echo) with `session_replication_role = replica` (so no capture trigger of
/// an opted-in table turns it into a change, and no user trigger fires), and
/// is logged in that node's `mmlite.conflicts` with kind `repair`. For an
/// opted-in table the key's version row is made the source's too, so later
/// changes are judged against the same version everywhere.
public enum RepairPlan {
    public enum Mode: Sendable, Equatable {
        /// Every node takes this node's rows.
        case from(String)
        /// Per key, the node with the highest version (opted-in tables only).
        case lastUpdateWins

        public var reason: String {
            switch self {
            case .from(let node): return "mmlite repair --from \(node)"
            case .lastUpdateWins: return "mmlite repair --last-update-wins: highest version"
            }
        }
    }

    /// A version of an opted-in table's key, compared as conflict handling
    /// compares them: (ms, counter, node with COLLATE "C").
    public struct Version: Sendable, Equatable, Comparable {
        public var ms: Int64
        public var counter: Int64
        public var node: String
        /// The whole version row, as jsonb text.
        public var row: String
        public init(ms: Int64, counter: Int64, node: String, row: String) {
            self.ms = ms
            self.counter = counter
            self.node = node
            self.row = row
        }
        public static func < (a: Version, b: Version) -> Bool {
            if a.ms != b.ms { return a.ms < b.ms }
            if a.counter != b.counter { return a.counter < b.counter }
            return Array(a.node.utf8).lexicographicallyPrecedes(Array(b.node.utf8))
        }
        /// Equal versions (the row text aside).
        public func same(as other: Version) -> Bool { ms == other.ms && counter == other.counter && node == other.node }
    }

    /// One differing key as every node holds it.
    public struct Key: Sendable, Equatable {
        public var key: String
        /// node → the row as jsonb text (nil: no row).
        public var rows: [String: String?]
        /// node → the row's hash (nil: no row).
        public var hashes: [String: String?]
        /// node → the version row (opted-in tables; nil: none).
        public var versions: [String: Version?]
        public init(key: String, rows: [String: String?], hashes: [String: String?], versions: [String: Version?] = [:]) {
            self.key = key
            self.rows = rows
            self.hashes = hashes
            self.versions = versions
        }
    }

    /// What one node changes for one key.
    public struct Change: Sendable, Equatable {
        public enum Kind: String, Sendable, Equatable { case insert, update, delete }
        public var node: String
        public var key: String
        public var kind: Kind
        public var source: String
        /// The node's row before and the source's row (jsonb text; nil: none).
        public var oldRow: String?
        public var newRow: String?
        /// Opted-in tables: the node's version before and the source's.
        public var oldVersion: Version?
        public var newVersion: Version?
        public var reason: String
        public init(node: String, key: String, kind: Kind, source: String, oldRow: String?, newRow: String?,
                    oldVersion: Version?, newVersion: Version?, reason: String) {
            self.node = node
            self.key = key
            self.kind = kind
            self.source = source
            self.oldRow = oldRow
            self.newRow = newRow
            self.oldVersion = oldVersion
            self.newVersion = newVersion
            self.reason = reason
        }
    }

    /// The node whose row `key` takes. `nodes`: the compared nodes in config order.
    public static func source(of key: Key, mode: Mode, nodes: [String]) -> String? {
        switch mode {
        case .from(let node):
            return nodes.contains(node) ? node : nil
        case .lastUpdateWins:
            let unversioned = Version(ms: 0, counter: 0, node: "", row: "")
            let versionOf = { (node: String) -> Version in (key.versions[node] ?? nil) ?? unversioned }
            guard let best = nodes.map(versionOf).max() else { return nil }
            let tied = nodes.filter { versionOf($0).same(as: best) }
            // Equal versions with different rows (a write made around conflict
            // handling): the node that wrote the version, else the first one.
            return tied.first { $0 == best.node } ?? tied.first
        }
    }

    /// The changes that make every node hold the source's row (and version) of each key.
    public static func changes(_ keys: [Key], mode: Mode, nodes: [String], optedIn: Bool) -> [Change] {
        var result: [Change] = []
        for key in keys {
            guard let source = source(of: key, mode: mode, nodes: nodes) else { continue }
            let wanted = key.rows[source] ?? nil
            let wantedHash = key.hashes[source] ?? nil
            let wantedVersion = key.versions[source] ?? nil
            for node in nodes where node != source {
                let have = key.rows[node] ?? nil
                let haveHash = key.hashes[node] ?? nil
                let haveVersion = key.versions[node] ?? nil
                let rowDiffers = haveHash != wantedHash
                let versionDiffers = optedIn && haveVersion?.row != wantedVersion?.row
                guard rowDiffers || versionDiffers else { continue }
                let kind: Change.Kind = wanted == nil ? .delete : (have == nil ? .insert : .update)
                result.append(Change(node: node, key: key.key, kind: kind, source: source, oldRow: have, newRow: wanted,
                                     oldVersion: optedIn ? haveVersion : nil, newVersion: optedIn ? wantedVersion : nil,
                                     reason: mode.reason))
            }
        }
        return result
    }

    // MARK: - SQL

    /// The session's origin, set before the transaction (and reset after it).
    public static func origin(_ names: ObjectNames) -> String { "mmlite_\(names.mesh)_repair" }

    /// Opens the repair transaction on a node: origin, replica role.
    public static func begin(origin: String) -> [String] {
        DDLSQL.originSetup(origin) + ["BEGIN", "SET LOCAL session_replication_role = replica", "SET LOCAL search_path = ''"]
    }

    /// After COMMIT (or ROLLBACK).
    public static let end = DDLSQL.originReset

    /// Inserts or updates the row given as jsonb (`$1`).
    public static func upsertSQL(_ table: TableDiff.Table) -> String {
        let writable = table.columns.filter { !$0.generated }.map(\.name)
        let nonKey = writable.filter { !table.key.contains($0) }
        let list = TableDiff.columnList(writable)
        let action = nonKey.isEmpty ? "DO NOTHING"
            : "DO UPDATE SET " + nonKey.map { "\(SQL.identifier($0)) = EXCLUDED.\(SQL.identifier($0))" }.joined(separator: ", ")
        return """
            INSERT INTO \(table.name.sql) (\(list)) OVERRIDING SYSTEM VALUE
            SELECT \(list) FROM pg_catalog.jsonb_populate_record(NULL::\(table.name.sql), $1::jsonb)
            ON CONFLICT (\(TableDiff.columnList(table.key))) \(action)
            """
    }

    /// Deletes the row of the key given as a jsonb array of one key (`$1`).
    public static func deleteSQL(_ table: TableDiff.Table) -> String {
        "DELETE FROM \(table.name.sql) AS r USING \(TableDiff.keysRelation(table)) WHERE \(TableDiff.keyMatch(table, alias: "r"))"
    }

    static let versionColumns = ConflictContract.versionColumns

    /// Sets an opted-in table's version row to the one given as jsonb (`$1`).
    /// `withLife`: the table has delta columns, whose version rows also carry the row's life.
    public static func versionUpsertSQL(_ table: TableDiff.Table, withLife: Bool = false) -> String {
        let versions = ConflictSQL.versionTable(table.name).sql
        let versionColumns = versionColumns + (withLife ? ConflictSQL.lifeVersionColumns : [])
        let columns = table.key + versionColumns
        return """
            INSERT INTO \(versions) (\(TableDiff.columnList(columns)))
            SELECT \(TableDiff.columnList(columns)) FROM pg_catalog.jsonb_populate_record(NULL::\(versions), $1::jsonb)
            ON CONFLICT (\(TableDiff.columnList(table.key))) DO UPDATE SET \(versionColumns.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", "))
            """
    }

    /// Removes an opted-in table's version row of the key in `$1` (a jsonb array of one key).
    public static func versionDeleteSQL(_ table: TableDiff.Table) -> String {
        "DELETE FROM \(ConflictSQL.versionTable(table.name).sql) AS v USING \(TableDiff.keysRelation(table)) WHERE \(TableDiff.keyMatch(table, alias: "v"))"
    }

    /// Logs a change: `$1` table, `$2` key, `$3` reason, `$4` old version,
    /// `$5` old row, `$6` new version, `$7` new row, `$8` source node.
    public static let logSQL = """
        INSERT INTO mmlite.conflicts (table_name, key, kind, winner, reason, local_version, local_row, remote_version, remote_row, peer)
        VALUES ($1, $2::jsonb, 'repair', 'remote', $3, $4::jsonb, $5::jsonb, $6::jsonb, $7::jsonb, $8)
        """

    /// The statements of one change, each with its parameters, in order:
    /// the user row first (whoever writes a version row holds the key's row),
    /// then the version row, then the log.
    public static func statements(_ change: Change, table: TableDiff.Table, optedIn: Bool, withLife: Bool = false) -> [(sql: String, parameters: [String?])] {
        var result: [(String, [String?])] = []
        let keyArray = TableDiff.keysParameter([change.key])
        if let row = change.newRow {
            if change.oldRow != row { result.append((upsertSQL(table), [row])) }
        } else if change.oldRow != nil {
            result.append((deleteSQL(table), [keyArray]))
        }
        if optedIn {
            if let version = change.newVersion {
                result.append((versionUpsertSQL(table, withLife: withLife), [version.row]))
            } else if change.oldVersion != nil {
                result.append((versionDeleteSQL(table), [keyArray]))
            }
        }
        result.append((logSQL, [table.name.schema + "." + table.name.name, change.key, change.reason,
                                change.oldVersion?.row, change.oldRow, change.newVersion?.row, change.newRow, change.source]))
        return result
    }

    /// One line per change, for the report and `--dry-run`.
    public static func describe(_ change: Change) -> String {
        switch change.kind {
        case .insert: return "\(change.node): insert \(change.key) as on \(change.source): \(change.newRow ?? "")"
        case .update: return "\(change.node): update \(change.key) to \(change.source)'s row: \(change.newRow ?? "") (was \(change.oldRow ?? ""))"
        case .delete: return "\(change.node): delete \(change.key) (missing on \(change.source); was \(change.oldRow ?? ""))"
        }
    }
}
