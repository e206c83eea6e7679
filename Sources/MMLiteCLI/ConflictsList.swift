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

    struct Entry {
        var node: String
        var values: [String?]
        var loggedAt: String { values[0] ?? "" }
        var id: Int64 { Int64(values[11] ?? "0") ?? 0 }
    }

    func run() throws -> ExitStatus {
        let console = context.console
        let config = try loadConfig(configPath, console: console)
        var tableName: String? = nil
        if let table {
            guard case .table(let name)? = try? TablePattern(parsing: table) else {
                throw CLIError(.usage, "--table \(table): expected schema.table")
            }
            tableName = "\(name.schema).\(name.name)"
        }
        let connections = Connections(config: config, console: console)
        let reachable = config.nodes.map(\.name).filter { connections[$0] != nil }
        for name in config.nodes.map(\.name) where connections[name] == nil {
            console.error("mmlite: warning: \(name) is unreachable, its conflicts are not shown: \(connections.errors[name] ?? "")")
        }
        guard let first = reachable.first, let anchor = connections[first] else {
            throw CLIError(.unavailable, "no node is reachable")
        }
        // One cut-off for every node, computed once.
        var cutoff: String? = nil
        if let since {
            do { cutoff = try anchor.query(ConflictMaintenance.since, [since]).scalar } catch let error as PGError {
                throw CLIError(.usage, "--since \(since): not an interval (\"2 hours\") or a timestamp: \(error.message)")
            }
        }
        var entries: [Entry] = []
        var failed = 0
        for name in reachable {
            guard let connection = connections[name] else { continue }
            do {
                guard try connection.query("SELECT pg_catalog.to_regclass('mmlite.conflicts') IS NOT NULL").scalar == "t" else { continue }
                let result = try connection.query(ConflictMaintenance.list, [cutoff, tableName])
                entries += result.rows.map { Entry(node: name, values: $0) }
            } catch {
                failed += 1
                console.error("mmlite: warning: cannot read \(name)'s conflict log: \(console.redact((error as? PGError)?.message ?? "\(error)"))")
            }
        }
        guard failed < reachable.count else { throw CLIError(.unavailable, "no node's conflict log could be read") }
        entries.sort { ($0.loggedAt, $0.node, $0.id) < ($1.loggedAt, $1.node, $1.id) }

        switch format {
        case .json:
            func raw(_ value: String?) -> JSON { value.map { .raw($0) } ?? .null }
            console.print(JSON.array(entries.map { entry in
                let v = entry.values
                return .object([
                    ("node", .string(entry.node)), ("logged_at", .optional(v[0])), ("table_name", .optional(v[1])),
                    ("key", raw(v[2])), ("kind", .optional(v[3])), ("winner", .optional(v[4])), ("reason", .optional(v[5])),
                    ("local_version", raw(v[6])), ("local_row", raw(v[7])), ("remote_version", raw(v[8])),
                    ("remote_row", raw(v[9])), ("peer", .optional(v[10])),
                ])
            }).render())
        case .table:
            if entries.isEmpty {
                console.print("No conflicts logged" + (since.map { " since \($0)" } ?? "") + (table.map { " for \($0)" } ?? "") + ".")
            } else {
                var rows = [["NODE", "TIME (UTC)", "TABLE", "KEY", "KIND", "WINNER", "PEER", "LOCAL VERSION", "REMOTE VERSION", "REASON"]]
                for entry in entries {
                    let v = entry.values
                    rows.append([entry.node, String((v[0] ?? "").prefix(23)), v[1] ?? "", v[2] ?? "", v[3] ?? "", v[4] ?? "",
                                 v[10] ?? "-", v[6] ?? "-", v[8] ?? "-", v[5] ?? ""])
                }
                printTable(rows, console: console)
                console.print()
                console.print("\(entries.count) entr\(entries.count == 1 ? "y" : "ies") from \(Set(entries.map(\.node)).count) node(s); rows: --format json")
            }
        }
        return .ok
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
                var statements: [String] = []
                if try connection.query("SELECT pg_catalog.to_regclass('mmlite.conflicts') IS NOT NULL").scalar == "t" {
                    statements.append(ConflictMaintenance.pruneLog(retention: config.mesh.conflictLogRetention))
                }
                for name in (ConflictSetup.registry(connection) ?? [:]).keys.sorted() {
                    let parts = name.split(separator: ".", maxSplits: 1).map(String.init)
                    guard parts.count == 2 else { continue }
                    statements.append(ConflictSQL.prune(QualifiedName(schema: parts[0], name: parts[1]), tombstoneAge: config.mesh.tombstoneRetention))
                }
                if statements.isEmpty {
                    console.print("\(node.name): no conflict log or opted-in table; nothing to prune")
                    continue
                }
                if dryRun {
                    console.print("-- \(node.name)")
                    for statement in statements { console.print(statement + ";") }
                    continue
                }
                try connection.execute("BEGIN")
                var removed = "0"
                for (index, statement) in statements.enumerated() {
                    if index == 0 && statement.contains("mmlite.conflicts") {
                        removed = try connection.query(statement).scalar ?? "0"
                    } else {
                        try connection.execute(statement)
                    }
                }
                try connection.execute("COMMIT")
                done += 1
                console.print("\(node.name): removed \(removed) conflict-log row\(removed == "1" ? "" : "s") older than \(config.mesh.conflictLogRetention); pruned change rows and tombstones older than \(config.mesh.tombstoneRetention) of \(statements.count - (statements.first?.contains("mmlite.conflicts") == true ? 1 : 0)) opted-in table(s)")
            } catch {
                _ = try? connection.execute("ROLLBACK")
                problems += 1
                console.error("mmlite: \(node.name): prune failed: \(console.redact((error as? PGError)?.message ?? "\(error)"))")
            }
        }
        if problems == 0 { return .ok }
        return done == 0 && !dryRun ? .unavailable : .partial
    }
}
