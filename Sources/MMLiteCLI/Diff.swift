import ArgumentParser
import Foundation
import MMLiteCore
import PostgresClient

struct DiffCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Compare every mesh table (or the given ones) across the nodes, by primary key, while writes go on.",
        discussion: """
        Each node hashes every row and sums the hashes, for the whole table and then per range of rows (no table travels); differing ranges are narrowed to primary keys, and those keys are compared again once every link has caught up past the first look, so changes still in flight are not reported.

        Exit code: 0 identical, 1 differences found, 64 bad --table, 69 fewer than two nodes reachable, 75 incomplete (a node unreachable, a table not compared, or keys still changing), 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Option(name: .customLong("table"), help: ArgumentHelp("Only this table (repeatable).", valueName: "schema.table")) var tables: [String] = []
    @Option(help: "table or json.") var format: OutputFormat = .table
    @Option(help: ArgumentHelp("How long to wait for the links to catch up before re-checking.", valueName: "seconds")) var timeout: Double = 60
    @Option(help: ArgumentHelp("Stop narrowing a table after this many differing keys.", valueName: "n")) var maxDifferences: Int = 1000

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        let config = try loadConfig(global.config, console: context.console)
        let options = DiffOptions(timeout: timeout, maxDifferences: max(1, maxDifferences))
        return try Diff(config: config, configPath: global.config, tables: tables, format: format, options: options, context: context).run()
    }
}

struct DiffOptions {
    var timeout: Double
    var maxDifferences: Int
}

/// One differing key: every compared node's row (nil: missing there).
struct Difference {
    var key: String
    var rows: [String: String?]
    var hashes: [String: String?]
}

/// What `diff` found for one table.
struct TableReport {
    var table: QualifiedName
    var problem: String?
    var rows: [String: Int64] = [:]
    var buckets = 0
    var differingBuckets = 0
    var differences: [Difference] = []
    /// Keys that kept changing on some node between looks (not reported as differences).
    var changing: [String] = []
    var truncated = false
    /// Links that did not catch up within the timeout (differences may be in flight).
    var behind: [String] = []
    var seconds: Double = 0

    var complete: Bool { problem == nil && changing.isEmpty && behind.isEmpty }
}

extension TableCompare {
    /// Compares one table: summaries, narrowing, then re-checks after catch-up.
    func compare(_ name: QualifiedName, options: DiffOptions, progress: @escaping (String) -> Void) -> TableReport {
        let started = Date()
        var report = compareTable(name, options: options, progress: progress)
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    private func compareTable(_ name: QualifiedName, options: DiffOptions, progress: @escaping (String) -> Void) -> TableReport {
        var report = TableReport(table: name)
        let table: TableDiff.Table
        switch describeTable(name) {
        case .success(let described): table = described
        case .failure(let problem):
            report.problem = problem.message
            return report
        }
        let marks = positions()
        // The whole table first (no grouping): identical tables need no more.
        let total = summaries(table, buckets: 1)
        if !failures.isEmpty {
            report.problem = "could not be read on " + failures.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ")
            return report
        }
        report.rows = total.mapValues(TableDiff.rowCount)
        report.buckets = 1
        guard !TableDiff.differingBuckets(total).isEmpty else { return report }
        report.buckets = TableDiff.bucketCount(estimatedRows: estimate(name))
        let summaries = report.buckets == 1 ? total : summaries(table, buckets: report.buckets)
        let differing = TableDiff.differingBuckets(summaries)
        report.differingBuckets = differing.count
        progress("\(name.sql): \(report.buckets) ranges hashed, \(differing.count) differ")
        guard !differing.isEmpty else { return report }
        let (candidates, truncated) = candidateKeys(table, buckets: report.buckets, differing: differing, summaries: summaries,
                                                    limit: options.maxDifferences) { done, total in
            progress("\(name.sql): narrowing, batch \(done)/\(total)")
        }
        report.truncated = truncated
        let (confirmed, changing, behind, last) = recheck(table, keys: candidates, marks: marks, timeout: options.timeout)
        report.changing = changing
        report.behind = behind
        let shown = behind.isEmpty ? confirmed : confirmed + changing
        // Shorter keys first: integer keys in numeric order.
        report.differences = shown.sorted { ($0.count, $0) < ($1.count, $1) }.map { key in
            Difference(key: key, rows: Dictionary(uniqueKeysWithValues: nodes.map { ($0, last[$0]?[key]?.row) }),
                       hashes: Dictionary(uniqueKeysWithValues: nodes.map { ($0, last[$0]?[key]?.hash) }))
        }
        if !behind.isEmpty { report.changing = [] }
        return report
    }

    /// Looks at `keys` again after every link caught up past `marks`, until
    /// each key is the same everywhere or stable across two looks (at most 5).
    func recheck(_ table: TableDiff.Table, keys: [String], marks: [String: LSN], timeout: Double)
        -> (confirmed: [String], changing: [String], behind: [String], last: [String: [String: (hash: String, row: String)]]) {
        var marks = marks
        var remaining = keys
        var previous: [String: [String: String]]?
        var confirmed: [String] = []
        var last: [String: [String: (hash: String, row: String)]] = [:]
        for _ in 1...5 where !remaining.isEmpty {
            if let behind = waitCaughtUp(marks, timeout: timeout) {
                return (confirmed, remaining, behind, last)
            }
            let current = rows(table, keys: remaining)
            marks = positions()
            // What this look saw replaces what earlier looks saw (a key gone now is gone).
            for node in nodes {
                for key in remaining { last[node]?[key] = nil }
                last[node, default: [:]].merge(current[node] ?? [:]) { _, new in new }
            }
            let hashes = current.mapValues { $0.mapValues(\.hash) }
            let decision = RecheckDecision.judge(keys: remaining, previous: previous, current: hashes)
            confirmed += decision.confirmed
            remaining = decision.changing
            previous = hashes
        }
        return (confirmed, remaining, [], last)
    }
}

/// `mmlite diff`: compares tables and reports the differing keys.
struct Diff {
    let config: MeshConfig
    let configPath: String
    let tables: [String]
    let format: OutputFormat
    let options: DiffOptions
    let context: Context

    var console: Console { context.console }

    /// The tables to compare: the given ones (each must be a mesh table), or every mesh table.
    static func resolve(_ given: [String], config: MeshConfig, compare: TableCompare) throws -> [QualifiedName] {
        var existing = Set<QualifiedName>()
        for node in compare.nodes {
            if let connection = compare.connection(node) { existing.formUnion(try Catalog.userTables(connection)) }
        }
        let meshTables = resolveTables(config.mesh.tables, existing: [existing]).tables
        if given.isEmpty { return meshTables }
        return try given.map { text in
            guard case .table(let name)? = try? TablePattern(parsing: text), meshTables.contains(name) else {
                throw CLIError(.usage, "\(text) is not a table of mesh \"\(config.mesh.name)\" (its tables: \(meshTables.map(\.sql).joined(separator: ", ")))")
            }
            return name
        }
    }

    func run() throws -> ExitStatus {
        let started = Date()
        let compare = TableCompare(config: config, console: console)
        defer { compare.close() }
        for (node, error) in compare.lost { console.error("mmlite diff: cannot connect to \(node): \(error); comparing the other nodes") }
        guard compare.nodes.count >= 2 else {
            console.error("mmlite diff: fewer than two nodes reachable: nothing to compare")
            return .unavailable
        }
        let names = try Self.resolve(tables, config: config, compare: compare)
        let interactive = format == .table && isatty(STDERR_FILENO) == 1
        var reports: [TableReport] = []
        for name in names {
            reports.append(compare.compare(name, options: options) { line in
                if interactive { console.error("  \(line)") }
            })
        }
        let elapsed = Date().timeIntervalSince(started)
        let result = DiffRendering(config: config, nodes: config.nodes.map(\.name), compared: compare.nodes, lost: compare.lost,
                                   reports: reports, seconds: elapsed)
        switch format {
        case .table: result.printTable(console)
        case .json: console.print(result.json.render())
        }
        return result.exitStatus
    }
}

/// `diff`'s output, table or JSON, and its exit code.
struct DiffRendering {
    let config: MeshConfig
    let nodes: [String]
    let compared: [String]
    let lost: [(node: String, error: String)]
    let reports: [TableReport]
    let seconds: Double

    var differenceCount: Int { reports.reduce(0) { $0 + $1.differences.count } }
    var complete: Bool { lost.isEmpty && reports.allSatisfy(\.complete) }

    var result: String { differenceCount > 0 ? "different" : complete ? "identical" : "incomplete" }

    /// 1 when differences were found (even if incomplete), else 75 when incomplete, else 0.
    var exitStatus: ExitStatus { differenceCount > 0 ? .warning : complete ? .ok : .partial }

    static func shorten(_ text: String, _ limit: Int = 120) -> String {
        text.count <= limit ? text : String(text.prefix(limit)) + "... (\(text.utf8.count) bytes)"
    }

    func printTable(_ console: Console) {
        console.print("mmlite diff: mesh \"\(config.mesh.name)\", nodes \(compared.joined(separator: ", ")), \(reports.count) table\(reports.count == 1 ? "" : "s")")
        for (node, error) in lost { console.print("  \(node): not compared: \(error)") }
        console.print()
        let header = ["TABLE"] + compared.map { "ROWS \($0)" } + ["RANGES", "DIFFERING", "TIME"]
        var lines = [header]
        for report in reports {
            let state = report.problem.map { "not compared: \($0)" } ?? "\(report.differences.count)\(report.truncated ? "+" : "")"
            lines.append([report.table.sql] + compared.map { report.rows[$0].map(String.init) ?? "-" }
                         + [String(report.buckets), state, String(format: "%.2f s", report.seconds)])
        }
        let widths = header.indices.map { column in lines.map { $0[column].count }.max() ?? 0 }
        for line in lines {
            console.print(line.enumerated().map { $0.offset == line.count - 1 ? $0.element : $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        for report in reports where !report.differences.isEmpty {
            console.print()
            for difference in report.differences {
                console.print("\(report.table.sql) \(difference.key)")
                for node in compared {
                    console.print("  \(node): " + ((difference.rows[node] ?? nil).map { Self.shorten($0) } ?? "missing"))
                }
            }
        }
        printNotes(console)
    }

    func printNotes(_ console: Console) {
        console.print()
        for report in reports {
            if report.truncated { console.print("note: \(report.table.sql): stopped after \(report.differences.count) differing keys (--max-differences); there are more") }
            if !report.changing.isEmpty { console.print("note: \(report.table.sql): \(report.changing.count) key(s) kept changing while compared; run diff again: \(report.changing.prefix(5).joined(separator: " "))") }
            if !report.behind.isEmpty { console.print("note: \(report.table.sql): links did not catch up in time (\(report.behind.joined(separator: ", "))): the differences above may still be in flight") }
        }
        let time = String(format: "%.2f s", seconds)
        switch result {
        case "identical": console.print("Identical: \(reports.count) table\(reports.count == 1 ? "" : "s") on \(compared.count) nodes (\(time)).")
        case "different": console.print("Different: \(differenceCount) differing key\(differenceCount == 1 ? "" : "s") in \(reports.filter { !$0.differences.isEmpty }.count) table(s) (\(time)).\(complete ? "" : " The comparison is incomplete (see above).") Make them identical with `mmlite repair --table TABLE --from NODE`.")
        default: console.print("Incomplete: no difference among what was compared, but not everything was compared (\(time)).")
        }
    }

    var json: JSON {
        .object([
            ("mesh", .string(config.mesh.name)),
            ("result", .string(result)),
            ("seconds", .number(seconds)),
            ("nodes", .array(nodes.map { node in
                .object([("name", .string(node)), ("compared", .bool(compared.contains(node))),
                         ("error", .optional(lost.first { $0.node == node }?.error))])
            })),
            ("tables", .array(reports.map { report in
                .object([("table", .string(report.table.sql)), ("compared", .bool(report.problem == nil)), ("problem", .optional(report.problem)),
                         ("rows", .object(compared.map { ($0, .optional(report.rows[$0])) })),
                         ("ranges", .integer(Int64(report.buckets))), ("differing_ranges", .integer(Int64(report.differingBuckets))),
                         ("differences", .integer(Int64(report.differences.count))), ("truncated", .bool(report.truncated)),
                         ("changing", .array(report.changing.map { .raw($0) })), ("not_caught_up", .array(report.behind.map { .string($0) })),
                         ("seconds", .number(report.seconds))])
            })),
            ("differences", .array(reports.flatMap { report in
                report.differences.map { difference in
                    .object([("table", .string(report.table.sql)), ("key", .raw(difference.key)),
                             ("nodes", .object(compared.map { ($0, (difference.rows[$0] ?? nil).map { JSON.raw($0) } ?? .null) }))])
                }
            })),
        ])
    }
}
