import Foundation
import MMLiteCore
import PostgresClient

/// The I/O of comparing tables across nodes (`diff`, `repair`, and apply's
/// content check): runs `TableDiff`'s SQL on every compared node at once
/// (sent to all, then collected), and hands the answers to Core's decisions.
/// A node that fails mid-way is dropped from the comparison and named in `lost`.
final class TableCompare {
    let config: MeshConfig
    let console: Console
    /// Compared nodes, in config order, with their own sessions.
    private(set) var nodes: [String] = []
    private var sessions: [String: PGConnection] = [:]
    /// Nodes not compared, with why (unreachable, or failed mid-way).
    private(set) var lost: [(node: String, error: String)] = []

    init(config: MeshConfig, console: Console, only: [String]? = nil) {
        self.config = config
        self.console = console
        for node in config.nodes where only?.contains(node.name) ?? true {
            do {
                let connection = try Connections.connect(node.dsn)
                for setting in TableDiff.sessionSettings { try connection.execute(setting) }
                sessions[node.name] = connection
                nodes.append(node.name)
                console.debug("connected to \(node.name) (\(DSN.masked(node.dsn)))")
            } catch {
                lost.append((node.name, describe(error)))
            }
        }
    }

    func close() {
        for connection in sessions.values { connection.close() }
        sessions = [:]
    }

    func connection(_ node: String) -> PGConnection? { sessions[node] }

    func describe(_ error: Error) -> String {
        if let error = error as? PGError { return console.redact(error.message) }
        return console.redact("\(error)")
    }

    private func drop(_ node: String, _ error: Error) {
        lost.append((node, describe(error)))
        sessions[node]?.close()
        sessions[node] = nil
        nodes.removeAll { $0 == node }
    }

    /// Why the last `everywhere` had no result from a node that is still compared
    /// (an error of the statement, e.g. a permission denied).
    private(set) var failures: [String: String] = [:]

    /// The statement failed on `node`: a lost connection drops the node, any
    /// other error only leaves its result out (see `failures`).
    private func failed(_ node: String, _ error: Error) {
        if let error = error as? PGError, error.kind != .connection, sessions[node]?.isOpen == true {
            failures[node] = describe(error)
        } else {
            drop(node, error)
        }
    }

    /// Runs `sql` on every compared node at once.
    func everywhere(_ sql: String, _ parameters: [String?] = []) -> [String: PGResult] {
        console.debug("[\(nodes.joined(separator: ", "))] \(sql)")
        failures = [:]
        var sent: [String] = []
        for node in nodes {
            guard let connection = sessions[node] else { continue }
            do {
                try connection.send(sql, parameters)
                sent.append(node)
            } catch {
                failed(node, error)
            }
        }
        var results: [String: PGResult] = [:]
        for node in sent {
            guard let connection = sessions[node] else { continue }
            do { results[node] = try connection.receive() } catch { failed(node, error) }
        }
        return results
    }

    // MARK: - Describing a table

    static let columnsSQL = """
        SELECT a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated <> '' AS generated,
               array_position(i.indkey::int2[], a.attnum) AS key_position,
               t.typname AS type_name, t.typnamespace = 'pg_catalog'::regnamespace AS built_in,
               coalesce(co.collisdeterministic, true) AS deterministic
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
        LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
        WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """

    /// The table as the first compared node has it, if every compared node
    /// has the same columns and primary key; else why it cannot be compared.
    func describeTable(_ name: QualifiedName) -> Result<TableDiff.Table, TableProblem> {
        let answers = everywhere(Self.columnsSQL, [name.sql])
        var described: [String: TableDiff.Table] = [:]
        for node in nodes {
            guard let result = answers[node] else { continue }
            let rows = result.named
            let columns = rows.compactMap { row in
                row["column_name"].map {
                    TableDiff.Column(name: $0, type: row["type"] ?? "", generated: row.bool("generated") ?? false,
                                     hashing: .of(typeName: row["type_name"] ?? "", builtIn: row.bool("built_in") ?? false,
                                                  deterministic: row.bool("deterministic") ?? false))
                }
            }
            let key = rows.compactMap { row in row.int("key_position").flatMap { position in row["column_name"].map { (position, $0) } } }
                .sorted { $0.0 < $1.0 }.map(\.1)
            described[node] = TableDiff.Table(name: name, columns: columns, key: key)
        }
        guard let first = nodes.first, var reference = described[first] else { return .failure(.notCompared("no node answered")) }
        let missing = nodes.filter { described[$0]?.columns.isEmpty ?? true }
        if !missing.isEmpty { return .failure(.notCompared("missing on \(missing.joined(separator: ", "))")) }
        if reference.key.isEmpty { return .failure(.notCompared("no primary key: rows cannot be matched across nodes")) }
        for node in nodes.dropFirst() {
            guard let other = described[node] else { continue }
            let same = Set(other.columns.map { "\($0.name) \($0.type)" }) == Set(reference.columns.map { "\($0.name) \($0.type)" }) && other.key == reference.key
            if !same { return .failure(.notCompared("its columns or primary key differ between \(first) and \(node) (see mmlite status)")) }
        }
        // Every node must hash alike: by value only where every node can and agrees.
        reference.byValue = nodes.allSatisfy { node in
            sessions[node].map { ServerCapabilities(versionNumber: $0.serverVersionNumber).recordHash } ?? false
        }
        for (index, column) in reference.columns.enumerated() {
            let agreed = nodes.allSatisfy { node in described[node]?.columns.first { $0.name == column.name }?.hashing == column.hashing }
            if !agreed { reference.columns[index].hashing = .text }
        }
        return .success(reference)
    }

    enum TableProblem: Error {
        case notCompared(String)
        var message: String {
            switch self { case .notCompared(let why): return why }
        }
    }

    // MARK: - Comparing

    /// Each compared node's current WAL position.
    func positions() -> [String: LSN] {
        everywhere("SELECT pg_catalog.pg_current_wal_lsn()::text AS lsn").compactMapValues { $0.scalar.flatMap(LSN.init) }
    }

    /// The largest row estimate of any node (reltuples, or the size over 64
    /// bytes a row when the table was never analyzed).
    func estimate(_ table: QualifiedName) -> Int64 {
        let answers = everywhere("""
            SELECT greatest(c.reltuples::bigint, pg_catalog.pg_relation_size(c.oid) / 64, 0) AS estimate
            FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)
            """, [table.sql])
        return answers.values.compactMap { $0.first?.int64("estimate") }.max() ?? 0
    }

    /// Per node, the bucket summaries of `table`.
    func summaries(_ table: TableDiff.Table, buckets: Int) -> [String: [Int: TableDiff.Summary]] {
        everywhere(TableDiff.summarySQL(table, buckets: buckets)).mapValues { result in
            var summary: [Int: TableDiff.Summary] = [:]
            for row in result.named {
                guard let bucket = row.int("bucket") else { continue }
                summary[bucket] = TableDiff.Summary(rows: row.int64("row_count") ?? 0, sum: row["hash_sum"] ?? "0")
            }
            return summary
        }
    }

    /// Keys of the differing buckets whose rows differ, at most `limit`;
    /// `progress` is told each batch done.
    func candidateKeys(_ table: TableDiff.Table, buckets: Int, differing: [Int], summaries: [String: [Int: TableDiff.Summary]],
                       limit: Int, progress: (Int, Int) -> Void) -> (keys: [String], truncated: Bool) {
        var keys: [String] = []
        var seen = Set<String>()
        let batches = TableDiff.batches(differing, summaries: summaries, limit: 20_000)
        for (index, batch) in batches.enumerated() {
            let answers = everywhere(TableDiff.bucketRowsSQL(table, buckets: buckets), [arrayLiteral(batch.map(String.init))])
            let hashes = answers.mapValues { result in
                Dictionary(result.named.compactMap { row in row["key"].map { ($0, row["row_hash"] ?? "") } }, uniquingKeysWith: { a, _ in a })
            }
            // A changed row is in two buckets, possibly two batches: each key once.
            for key in TableDiff.differingKeys(hashes) where seen.insert(key).inserted { keys.append(key) }
            progress(index + 1, batches.count)
            if keys.count >= limit { return (Array(keys.prefix(limit)), true) }
        }
        return (keys, false)
    }

    /// The rows of `keys` on every compared node: node → key → (hash, row).
    func rows(_ table: TableDiff.Table, keys: [String]) -> [String: [String: (hash: String, row: String)]] {
        var result: [String: [String: (hash: String, row: String)]] = [:]
        for node in nodes { result[node] = [:] }
        for start in stride(from: 0, to: keys.count, by: 500) {
            let chunk = Array(keys[start..<min(keys.count, start + 500)])
            for (node, answer) in everywhere(TableDiff.rowsSQL(table), [TableDiff.keysParameter(chunk)]) {
                for row in answer.named {
                    guard let key = row["key"] else { continue }
                    result[node, default: [:]][key] = (row["row_hash"] ?? "", row["row"] ?? "null")
                }
            }
        }
        return result.filter { nodes.contains($0.key) }
    }

    /// Opted-in tables: the version rows of `keys` on every compared node.
    func versions(_ table: TableDiff.Table, keys: [String]) -> [String: [String: RepairPlan.Version]] {
        var result: [String: [String: RepairPlan.Version]] = [:]
        for start in stride(from: 0, to: keys.count, by: 500) {
            let chunk = Array(keys[start..<min(keys.count, start + 500)])
            for (node, answer) in everywhere(TableDiff.versionsSQL(table), [TableDiff.keysParameter(chunk)]) {
                for row in answer.named {
                    guard let key = row["key"], let text = row["version"] else { continue }
                    result[node, default: [:]][key] = RepairPlan.Version(ms: row.int64("v_ms") ?? 0, counter: row.int64("v_counter") ?? 0,
                                                                        node: row["v_node"] ?? "", row: text)
                }
            }
        }
        return result
    }

    /// Waits until every link between the compared nodes confirmed past
    /// `marks`; nil when done, else the links still behind at the timeout.
    func waitCaughtUp(_ marks: [String: LSN], timeout: Double) -> [String]? {
        let started = Date()
        let names = config.names
        while true {
            let answers = everywhere("SELECT slot_name, confirmed_flush_lsn::text AS confirmed FROM pg_catalog.pg_replication_slots WHERE starts_with(slot_name, $1)",
                                     [names.prefix])
            var slots: [String: [String: LSN?]] = [:]
            for (node, answer) in answers {
                for row in answer.named {
                    guard let slot = row["slot_name"], let subscriber = names.subscriber(ofSlot: slot) else { continue }
                    slots[node, default: [:]][subscriber] = row["confirmed"].flatMap(LSN.init)
                }
            }
            let behind = CatchUp.behind(marks: marks, slots: slots, nodes: nodes)
            if behind.isEmpty { return nil }
            if Date().timeIntervalSince(started) > timeout { return behind }
            usleep(100_000)
        }
    }
}
