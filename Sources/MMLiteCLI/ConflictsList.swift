import Foundation
import MMLiteCore
import PostgresClient

/// `mmlite conflicts list`: every reachable node's mmlite.conflicts, merged by time.
struct ConflictsList {
    let configPath: String
    let since: String?
    let table: String?
    let format: OutputFormat
    let context: Context

    /// One conflict-log row (columns of `ConflictMaintenance.list`).
    struct Entry {
        var node: String
        var row: PGRow
        var loggedAt: String { row["logged_at"] ?? "" }
        var id: Int64 { row.int64("id") ?? 0 }
        subscript(_ column: String) -> String? { row[column] }
    }

    func run() throws -> ExitStatus {
        let console = context.console
        let config = try loadConfig(configPath, console: console)
        let tableName = try parseTable()
        let connections = Connections(config: config, console: console)
        let reachable = config.nodes.map(\.name).filter { connections[$0] != nil }
        for name in config.nodes.map(\.name) where connections[name] == nil {
            console.error("mmlite: warning: \(name) is unreachable, its conflicts are not shown: \(connections.errors[name] ?? "")")
        }
        guard let first = reachable.first, let anchor = connections[first] else {
            throw CLIError(.unavailable, "no node is reachable")
        }
        let cutoff = try self.cutoff(anchor)
        var entries: [Entry] = []
        var failed = 0
        for name in reachable {
            guard let connection = connections[name] else { continue }
            do {
                guard try Catalog.conflictLogExists(connection) else { continue }
                let result = try connection.query(ConflictMaintenance.list, [cutoff, tableName])
                entries += result.named.map { Entry(node: name, row: $0) }
            } catch {
                failed += 1
                console.error("mmlite: warning: cannot read \(name)'s conflict log: \(console.message(of: error))")
            }
        }
        guard failed < reachable.count else { throw CLIError(.unavailable, "no node's conflict log could be read") }
        entries.sort { ($0.loggedAt, $0.node, $0.id) < ($1.loggedAt, $1.node, $1.id) }
        switch format {
        case .json: console.print(json(entries).render())
        case .table: printTable(entries, console: console)
        }
        return .ok
    }

    /// `--table` as the conflict log names tables (schema.table).
    private func parseTable() throws -> String? {
        guard let table else { return nil }
        guard case .table(let name)? = try? TablePattern(parsing: table) else {
            throw CLIError(.usage, "--table \(table): expected schema.table")
        }
        return "\(name.schema).\(name.name)"
    }

    /// One cut-off for every node, computed once (on `anchor`).
    private func cutoff(_ anchor: PGConnection) throws -> String? {
        guard let since else { return nil }
        do { return try anchor.query(ConflictMaintenance.since, [since]).first?["since"] } catch let error as PGError {
            throw CLIError(.usage, "--since \(since): not an interval (\"2 hours\") or a timestamp: \(error.message)")
        }
    }

    private func json(_ entries: [Entry]) -> JSON {
        func raw(_ value: String?) -> JSON { value.map { .raw($0) } ?? .null }
        return JSON.array(entries.map { entry in
            .object([
                ("node", .string(entry.node)), ("logged_at", .optional(entry["logged_at"])), ("table_name", .optional(entry["table_name"])),
                ("key", raw(entry["key"])), ("kind", .optional(entry["kind"])), ("winner", .optional(entry["winner"])),
                ("reason", .optional(entry["reason"])), ("local_version", raw(entry["local_version"])), ("local_row", raw(entry["local_row"])),
                ("remote_version", raw(entry["remote_version"])), ("remote_row", raw(entry["remote_row"])), ("peer", .optional(entry["peer"])),
            ])
        })
    }

    private func printTable(_ entries: [Entry], console: Console) {
        guard !entries.isEmpty else {
            console.print("No conflicts logged" + (since.map { " since \($0)" } ?? "") + (table.map { " for \($0)" } ?? "") + ".")
            return
        }
        var rows = [["NODE", "TIME (UTC)", "TABLE", "KEY", "KIND", "WINNER", "PEER", "LOCAL VERSION", "REMOTE VERSION", "REASON"]]
        for entry in entries {
            rows.append([entry.node, String((entry["logged_at"] ?? "").prefix(23)), entry["table_name"] ?? "", entry["key"] ?? "",
                         entry["kind"] ?? "", entry["winner"] ?? "", entry["peer"] ?? "-", entry["local_version"] ?? "-",
                         entry["remote_version"] ?? "-", entry["reason"] ?? ""])
        }
        MMLiteCLI.printTable(rows, console: console)
        console.print()
        console.print("\(entries.count) entr\(entries.count == 1 ? "y" : "ies") from \(Set(entries.map(\.node)).count) node(s); rows: --format json")
    }
}

/// `mmlite conflicts prune`: conflict-log retention, change rows, old tombstones.
struct ConflictsPrune {
    let configPath: String
    let dryRun: Bool
    let context: Context

    func run() throws -> ExitStatus {
        let console = context.console
        let config = try loadConfig(configPath, console: console)
        let connections = Connections(config: config, console: console)
        var done = 0
        var problems = 0
        for node in config.nodes {
            guard let connection = connections[node.name] else {
                console.error("mmlite: warning: \(node.name) is unreachable, not pruned: \(connections.errors[node.name] ?? "")")
                problems += 1
                continue
            }
            do {
                let work = try plan(connection, config: config)
                if work.isEmpty {
                    console.print("\(node.name): no conflict log or opted-in table; nothing to prune")
                    continue
                }
                if dryRun {
                    console.print("-- \(node.name)")
                    for statement in work.statements { console.print(statement + ";") }
                    continue
                }
                let removed = try prune(work, connection)
                done += 1
                console.print("\(node.name): removed \(removed) conflict-log row\(removed == "1" ? "" : "s") older than \(config.mesh.conflictLogRetention); pruned change rows and tombstones older than \(config.mesh.tombstoneRetention) of \(work.tables.count) opted-in table(s)")
            } catch {
                _ = try? connection.execute("ROLLBACK")
                problems += 1
                console.error("mmlite: \(node.name): prune failed: \(console.message(of: error))")
            }
        }
        if problems == 0 { return .ok }
        return done == 0 && !dryRun ? .unavailable : .partial
    }

    /// What to prune on one node: the conflict log (a query returning the
    /// rows removed) and each opted-in table (statements without a result).
    struct Work {
        var log: String?
        var tables: [String] = []
        var statements: [String] { (log.map { [$0] } ?? []) + tables }
        var isEmpty: Bool { log == nil && tables.isEmpty }
    }

    private func plan(_ connection: PGConnection, config: MeshConfig) throws -> Work {
        var work = Work()
        if try Catalog.conflictLogExists(connection) {
            work.log = ConflictMaintenance.pruneLog(retention: config.mesh.conflictLogRetention)
        }
        for name in (try Catalog.conflictRegistry(connection) ?? [:]).keys.sorted() {
            let parts = name.split(separator: ".", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            work.tables.append(ConflictSQL.prune(QualifiedName(schema: parts[0], name: parts[1]), tombstoneAge: config.mesh.tombstoneRetention))
        }
        return work
    }

    /// Runs `work` in one transaction; returns the number of conflict-log rows removed.
    private func prune(_ work: Work, _ connection: PGConnection) throws -> String {
        try connection.execute("BEGIN")
        var removed = "0"
        if let log = work.log { removed = try connection.query(log).first?["removed"] ?? "0" }
        for statement in work.tables { try connection.execute(statement) }
        try connection.execute("COMMIT")
        return removed
    }
}
