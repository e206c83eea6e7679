import ArgumentParser
import Foundation
import MMLiteCore
import PostgresClient

struct RepairCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Make every node hold what one node holds for a table's differing keys.",
        discussion: """
        Compares the table as `mmlite diff` does, then on every other node inserts, updates or deletes the differing keys' rows so they match the source: --from NODE, or per key the highest version (--last-update-wins, tables opted in to conflict handling only; their version rows follow). The changes carry a replication origin and are made with session_replication_role = replica: they are not replicated back, and each one is logged in that node's mmlite.conflicts (kind repair). Afterwards the repaired keys are compared again. Every node must be reachable.

        Exit code: 0 repaired (or nothing to repair), 2 the table cannot be compared or the links did not catch up (nothing changed), 64 bad arguments, 69 a node is unreachable (nothing changed), 75 stopped part-way, keys kept changing, or keys differ again after the repair, 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("The table to repair.", valueName: "schema.table")) var table: String
    @Option(help: ArgumentHelp("Every node takes this node's rows.", valueName: "node")) var from: String?
    @Flag(help: "Per key, the node holding the highest version wins (opted-in tables).") var lastUpdateWins = false
    @Flag(help: "Print what would change on each node and change nothing.") var dryRun = false
    @Option(help: ArgumentHelp("How long to wait for the links to catch up.", valueName: "seconds")) var timeout: Double = 60

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        let config = try loadConfig(global.config, console: context.console)
        let mode: RepairPlan.Mode
        switch (from, lastUpdateWins) {
        case (let node?, false):
            try requireNode(node, in: config, path: global.config)
            mode = .from(node)
        case (nil, true): mode = .lastUpdateWins
        default: throw CLIError(.usage, "repair needs exactly one of --from NODE and --last-update-wins")
        }
        return try Repair(config: config, table: table, mode: mode, dryRun: dryRun, timeout: timeout, context: context).run()
    }
}

/// `mmlite repair`: diff one table, plan the changes (Core's `RepairPlan`),
/// run them per node in one transaction each, then compare the keys again.
struct Repair {
    let config: MeshConfig
    let table: String
    let mode: RepairPlan.Mode
    let dryRun: Bool
    let timeout: Double
    let context: Context

    var console: Console { context.console }

    func run() throws -> ExitStatus {
        let compare = TableCompare(config: config, console: console)
        defer { compare.close() }
        if !compare.lost.isEmpty {
            for (node, error) in compare.lost { console.error("mmlite repair: cannot connect to \(node): \(error)") }
            console.error("Nothing was changed. Every node must be reachable for repair.")
            return .unavailable
        }
        let name = try Diff.resolve([table], config: config, compare: compare)[0]
        let optedIn = config.tableSettings[name]?.conflicts != nil
        if mode == .lastUpdateWins && !optedIn {
            throw CLIError(.usage, "\(name.sql) has no conflict handling, so no versions to compare: use --from NODE (--last-update-wins is for opted-in tables)")
        }
        guard case .success(let described) = compare.describeTable(name) else {
            let problem = compare.describeTable(name)
            if case .failure(let why) = problem { console.error("mmlite repair: \(name.sql) cannot be compared: \(why.message)") }
            return .failure
        }
        let report = compare.compare(name, options: DiffOptions(timeout: timeout, maxDifferences: 100_000)) { console.debug($0) }
        if let refused = refuse(report) { return refused }
        guard !report.differences.isEmpty else {
            console.print(report.changing.isEmpty
                ? "\(name.sql) is identical on \(compare.nodes.joined(separator: ", ")): nothing to repair."
                : "\(name.sql): no difference that held still on \(compare.nodes.joined(separator: ", ")); nothing repaired (run repair again).")
            return report.changing.isEmpty ? .ok : .partial
        }
        let keys = repairKeys(report, table: described, optedIn: optedIn, compare: compare)
        let changes = RepairPlan.changes(keys, mode: mode, nodes: compare.nodes, optedIn: optedIn)
        console.print("\(name.sql): \(report.differences.count) differing key\(report.differences.count == 1 ? "" : "s"); \(changes.count) change\(changes.count == 1 ? "" : "s") (\(mode.reason))\(dryRun ? ". Dry run: nothing is changed." : ":")")
        for change in changes { console.print("  " + DiffRendering.shorten(RepairPlan.describe(change), 240)) }
        if dryRun { return .ok }
        var failed: [String] = []
        for node in compare.nodes {
            let mine = changes.filter { $0.node == node }
            guard !mine.isEmpty, let connection = compare.connection(node) else { continue }
            do {
                try apply(mine, table: described, optedIn: optedIn, on: connection, node: node)
                console.print("\(node): \(mine.count) change\(mine.count == 1 ? "" : "s") made and logged in mmlite.conflicts (kind repair)")
            } catch {
                console.error("mmlite repair: on \(node): \(compare.describe(error)); nothing was changed there")
                failed.append(node)
            }
        }
        let status = verify(changes, table: described, compare: compare, failed: failed)
        return status == .ok && !report.changing.isEmpty ? .partial : status
    }

    func refuse(_ report: TableReport) -> ExitStatus? {
        if let problem = report.problem {
            console.error("mmlite repair: \(report.table.sql) cannot be compared: \(problem). Nothing was changed.")
            return .failure
        }
        if !report.behind.isEmpty {
            console.error("mmlite repair: the links did not catch up within \(Int(timeout)) s (\(report.behind.joined(separator: ", "))): differences may be in flight. Nothing was changed.")
            return .failure
        }
        if report.truncated {
            console.error("note: more differing keys than one run repairs; run repair again afterwards")
        }
        if !report.changing.isEmpty {
            console.error("note: \(report.changing.count) key(s) kept changing while compared and are left alone: \(report.changing.prefix(5).joined(separator: " "))")
        }
        return nil
    }

    /// The differing keys with every node's row, hash and (opted-in) version.
    func repairKeys(_ report: TableReport, table: TableDiff.Table, optedIn: Bool, compare: TableCompare) -> [RepairPlan.Key] {
        let versions = optedIn ? compare.versions(table, keys: report.differences.map(\.key)) : [:]
        return report.differences.map { difference in
            RepairPlan.Key(key: difference.key, rows: difference.rows, hashes: difference.hashes,
                           versions: Dictionary(uniqueKeysWithValues: compare.nodes.map { ($0, versions[$0]?[difference.key]) }))
        }
    }

    /// One node's changes in one transaction under the repair origin.
    func apply(_ changes: [RepairPlan.Change], table: TableDiff.Table, optedIn: Bool, on connection: PGConnection, node: String) throws {
        try connection.execute(ConflictSQL.shared)
        let begin = RepairPlan.begin(origin: RepairPlan.origin(config.names))
        do {
            for statement in begin {
                console.debug("[\(node)] \(statement)")
                try connection.execute(statement)
            }
            for change in changes {
                for statement in RepairPlan.statements(change, table: table, optedIn: optedIn, withLife: !(config.tableSettings[table.name]?.deltaColumns.isEmpty ?? true)) {
                    console.debug("[\(node)] \(statement.sql)")
                    try connection.query(statement.sql, statement.parameters)
                }
            }
            try connection.execute("COMMIT")
            try connection.execute(RepairPlan.end)
        } catch {
            _ = try? connection.execute("ROLLBACK")
            _ = try? connection.execute(RepairPlan.end)
            throw error
        }
    }

    /// Compares the repaired keys again once the links caught up.
    func verify(_ changes: [RepairPlan.Change], table: TableDiff.Table, compare: TableCompare, failed: [String]) -> ExitStatus {
        let keys = Array(Set(changes.map(\.key))).sorted()
        let (confirmed, changing, behind, _) = compare.recheck(table, keys: keys, marks: compare.positions(), timeout: timeout)
        if !failed.isEmpty {
            console.error("repair stopped part-way: \(failed.joined(separator: ", ")) not repaired; run `mmlite repair` again")
            return .partial
        }
        if !confirmed.isEmpty || !behind.isEmpty {
            console.error("mmlite repair: \(confirmed.count + (behind.isEmpty ? 0 : changing.count)) key(s) differ again after the repair (written meanwhile?): run `mmlite diff --table \(table.name.sql)`")
            return .partial
        }
        if !changing.isEmpty {
            console.print("note: \(changing.count) repaired key(s) were written again meanwhile; check with `mmlite diff --table \(table.name.sql)`")
        }
        console.print("Done: \(table.name.sql) now holds the same rows for the \(keys.count) repaired key\(keys.count == 1 ? "" : "s") on every node.")
        return .ok
    }
}
