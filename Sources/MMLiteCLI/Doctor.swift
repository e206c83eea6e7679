import Foundation
import MMLiteCore

func statusLabel(_ status: CheckResult.Status) -> String {
    switch status {
    case .pass: return "ok  "
    case .warning: return "WARN"
    case .failure: return "FAIL"
    }
}

/// Prints check results grouped by node (mesh-wide ones last).
func printChecks(_ results: [CheckResult], config: MeshConfig, console: Console, onlyProblems: Bool = false) {
    let width = max(12, results.map(\.check.count).max() ?? 0)
    var groups: [(String?, String)] = config.nodes.map { ($0.name, "\($0.name) (\(DSN.masked($0.dsn)))") }
    groups.append((nil, "mesh"))
    for (node, title) in groups {
        let items = results.filter { $0.node == node && (!onlyProblems || $0.status != .pass) }
        guard !items.isEmpty else { continue }
        console.print(title)
        for item in items {
            console.print("  \(statusLabel(item.status))  \(item.check.padding(toLength: width, withPad: " ", startingAt: 0))  \(item.message)")
            if let fix = item.fix, item.status != .pass {
                console.print("        " + String(repeating: " ", count: width) + "  fix: \(fix)")
            }
        }
    }
}

struct Doctor {
    let configPath: String
    let format: OutputFormat
    let context: Context
    /// Skip the hash pass of the content check (never its emptiness check).
    var skipHashCheck = false

    func run() throws -> ExitStatus {
        let console = context.console
        let config = try loadConfig(configPath, console: console)
        var preflight = Preflight(config: config, console: console)
        var request = ProbeRequest(plugin: preflight.publishersNeedingPlugin())
        let reachable = Set(preflight.facts.filter(\.reachable).map(\.name))
        for link in preflight.view.links where reachable.contains(link.subscriber) {
            request.peers.insert(link)
        }
        // Opted-in tables: which apply trigger each node will get.
        if config.mesh.conflictApply == .auto, preflight.tables.contains(where: { config.tableSettings[$0]?.conflicts != nil }) {
            request.nativeApply = reachable
        }
        preflight.probe(request)
        let results = preflight.evaluate(for: .doctor)
            + ContentGate(config: config, console: console, skipHash: skipHashCheck, forDoctor: true).checks(preflight)
        let worst = Checks.worst(results)
        let failures = results.filter { $0.status == .failure }.count
        let warnings = results.filter { $0.status == .warning }.count

        switch format {
        case .json:
            let json = JSON.object([
                ("mesh", .string(config.mesh.name)),
                ("result", .string(worst.rawValue)),
                ("failures", .integer(Int64(failures))),
                ("warnings", .integer(Int64(warnings))),
                ("tables", .array(preflight.tables.map { .string($0.sql) })),
                ("checks", .array(results.map { result in
                    .object([("node", .optional(result.node)), ("check", .string(result.check)),
                             ("status", .string(result.status.rawValue)), ("message", .string(result.message)),
                             ("fix", .optional(result.fix))])
                })),
            ])
            console.print(json.render())
        case .table:
            console.print("mmlite doctor: mesh \"\(config.mesh.name)\", \(config.nodes.count) nodes, tables: \(preflight.tables.map(\.sql).joined(separator: ", "))")
            console.print()
            printChecks(results, config: config, console: console)
            console.print()
            switch worst {
            case .pass: console.print("All \(results.count) checks passed.")
            case .warning: console.print("\(warnings) warning\(warnings == 1 ? "" : "s"), no failure: apply will work; consider the fixes above.")
            case .failure: console.print("\(failures) failure\(failures == 1 ? "" : "s"), \(warnings) warning\(warnings == 1 ? "" : "s"): fix the failures, then run `mmlite doctor` again.")
            }
        }
        switch worst {
        case .pass: return .ok
        case .warning: return .warning
        case .failure: return .failure
        }
    }
}
