import Foundation
import MMLiteCore
import PostgresClient

struct Apply {
    let configPath: String
    let dryRun: Bool
    let context: Context

    func run() throws -> ExitStatus {
        let console = context.console
        let logger = console.logger()
        let config = try loadConfig(configPath, console: console)
        var preflight = Preflight(config: config, console: console)

        if !preflight.unreachable.isEmpty {
            for facts in preflight.unreachable {
                console.error("mmlite: cannot connect to \(facts.name) (\(DSN.masked(config.node(named: facts.name)?.dsn ?? ""))): \(facts.connectionError ?? "")")
            }
            console.error("Nothing was changed. Every node must be reachable for apply; check the dsn, that the server runs, and pg_hba.conf (`mmlite doctor` explains).")
            return .unavailable
        }

        // Conflict handling (docs/conflicts.md): opted-in tables are published
        // through their change tables, installed before the publication needs them.
        let conflicts = ConflictSetup(config: config, tables: preflight.tables, connections: preflight.connections)
        if !conflicts.problems.isEmpty {
            for problem in conflicts.problems { console.error("mmlite: conflict handling: \(problem)") }
            console.error("Nothing was changed.")
            return .failure
        }
        let planner = Planner(config: config, tables: conflicts.publishedTables)
        var plan: Plan
        do {
            plan = try planner.plan(states: preflight.states)
            // Only on members: a node that has not joined gets it when it joins (with its copy).
            plan.steps = try conflicts.steps(nodes: Membership.members(config: config, states: preflight.states)) + plan.steps
        } catch let error as ConflictSQL.GenerationError {
            console.error("mmlite: conflict handling: \(error.message)")
            console.error("Nothing was changed.")
            return .failure
        } catch let error as PlanError {
            console.error("mmlite: cannot plan: \(error.message)")
            console.error("Nothing was changed.")
            return .failure
        }

        // Probe only what this plan will rely on.
        var request = ProbeRequest()
        for step in plan.steps {
            if step.loadsPlugin { request.plugin.insert(step.node) }
            if let link = step.usesPeerLink { request.peers.insert(link) }
        }
        preflight.probe(request)
        let results = preflight.evaluate()
        let failures = results.filter { $0.status == .failure }
        if !failures.isEmpty {
            console.error("mmlite apply: \(failures.count) check\(failures.count == 1 ? "" : "s") failed; nothing was changed.")
            console.error("")
            var errorLines: [String] = []
            let buffer = Console(out: { errorLines.append($0) }, err: { errorLines.append($0) })
            buffer.addSecrets(config.secrets)
            printChecks(failures, config: config, console: buffer)
            console.error(errorLines.joined().trimmingCharacters(in: .newlines))
            console.error("")
            console.error("Fix these, then run `mmlite apply` again (`mmlite doctor` shows every check).")
            return .failure
        }
        for warning in results.filter({ $0.status == .warning }) {
            console.error("warning: \(warning.node.map { "\($0): " } ?? "")\(warning.message)" + (warning.fix.map { "\n  fix: \($0)" } ?? ""))
        }
        for note in plan.notes { console.print("note: \(note)") }

        let summary = "\(config.nodes.count) nodes, \(Planner.links(of: config.nodes.map(\.name)).count) links, \(preflight.tables.count) table\(preflight.tables.count == 1 ? "" : "s")"
        if plan.isEmpty {
            console.print("Nothing to do: mesh \"\(config.mesh.name)\" is complete (\(summary)).")
            return .ok
        }

        if dryRun {
            console.print("Plan for mesh \"\(config.mesh.name)\" (\(summary)): \(plan.steps.count) statement\(plan.steps.count == 1 ? "" : "s"). Dry run: nothing is changed.")
            for step in plan.steps {
                console.print()
                console.print("-- on \(step.node): \(step.summary)")
                console.print(step.displaySQL + ";")
            }
            return .ok
        }

        console.print("Applying \(plan.steps.count) change\(plan.steps.count == 1 ? "" : "s") to mesh \"\(config.mesh.name)\" (\(summary)):")
        for (index, step) in plan.steps.enumerated() {
            logger.debug("[\(step.node)] \(step.displaySQL)")
            var failure: String? = nil
            var connectionLost = false
            if let connection = preflight.connections[step.node] ?? preflight.connections.reconnect(step.node) {
                do {
                    try connection.execute(step.sql)
                } catch let error as PGError {
                    failure = console.redact(error.description)
                    connectionLost = error.kind == .connection || !connection.isOpen
                } catch {
                    failure = console.redact("\(error)")
                }
            } else {
                failure = "cannot connect to \(step.node)"
                connectionLost = true
            }
            if let failure {
                console.print("  [\(index + 1)/\(plan.steps.count)] \(step.node): \(step.summary) ... FAILED")
                console.error("mmlite apply: on \(step.node): \(failure)")
                console.error("  statement: \(step.displaySQL)")
                if index == 0 {
                    console.error("Nothing was changed.")
                    return connectionLost ? .unavailable : .warning
                }
                console.error("")
                console.error("apply stopped after \(index) of \(plan.steps.count) changes.")
                console.error("Done:")
                for done in plan.steps[..<index] { console.error("  \(done.node): \(done.summary)") }
                console.error("Not done:")
                for todo in plan.steps[index...] { console.error("  \(todo.node): \(todo.summary)") }
                console.error(connectionLost
                    ? "\(step.node) went away. When it is back, run `mmlite apply` again: it continues from what exists."
                    : "Fix the cause above, then run `mmlite apply` again: it continues from what exists.")
                return .partial
            }
            console.print("  [\(index + 1)/\(plan.steps.count)] \(step.node): \(step.summary) ... done")
            context.hooks.afterStep?(index, step)
        }
        console.print("Done: mesh \"\(config.mesh.name)\" is complete (\(summary)). Check it with `mmlite status`.")
        return .ok
    }
}
