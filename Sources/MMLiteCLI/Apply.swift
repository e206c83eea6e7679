import Foundation
import MMLiteCore
import PostgresClient

/// `mmlite apply`: observe every node, plan the missing objects (Core's
/// `Planner`), probe what the plan relies on, then run it step by step.
struct Apply {
    let configPath: String
    let dryRun: Bool
    let context: Context
    /// Skip the hash pass of the content check (never its emptiness check).
    var skipHashCheck = false

    var console: Console { context.console }

    func run() throws -> ExitStatus {
        let config = try loadConfig(configPath, console: console)
        var preflight = Preflight(config: config, console: console)
        if !preflight.unreachable.isEmpty {
            for facts in preflight.unreachable {
                let what = facts.connectionError == nil ? "cannot read the state of" : "cannot connect to"
                console.error("mmlite: \(what) \(facts.name) (\(DSN.masked(config.node(named: facts.name)?.dsn ?? ""))): \(facts.failure ?? "")")
            }
            console.error("Nothing was changed. Every node must be reachable and readable for apply; check the dsn, that the server runs, pg_hba.conf and the role's rights (`mmlite doctor` explains).")
            return .unavailable
        }
        let plan: Plan
        switch makePlan(config: config, preflight: preflight) {
        case .success(let made): plan = made
        case .failure(let refusal):
            console.error(refusal.message)
            console.error("Nothing was changed.")
            return .failure
        }
        preflight.probe(probes(for: plan))
        let results = preflight.evaluate(for: .apply)
            + ContentGate(config: config, console: console, skipHash: skipHashCheck).checks(preflight)
        if let refused = refuse(results.filter { $0.status == .failure }, config: config) { return refused }
        for warning in results.filter({ $0.status == .warning }) {
            console.error("warning: \(warning.node.map { "\($0): " } ?? "")\(warning.message)" + (warning.fix.map { "\n  fix: \($0)" } ?? ""))
        }
        for note in plan.notes { console.print("note: \(note)") }

        let summary = "\(config.nodes.count) nodes, \(MeshView.links(of: config.nodes.map(\.name)).count) links, \(preflight.tables.count) table\(preflight.tables.count == 1 ? "" : "s")"
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
        if let stopped = execute(plan, connections: preflight.connections) { return stopped }
        console.print("Done: mesh \"\(config.mesh.name)\" is complete (\(summary)). Check it with `mmlite status`.")
        return .ok
    }

    struct Refusal: Error {
        var message: String
    }

    /// The conflict-handling steps (only on members: a node that has not
    /// joined gets them when it joins, with its copy), then the mesh's objects.
    func makePlan(config: MeshConfig, preflight: Preflight) -> Result<Plan, Refusal> {
        // Opted-in tables are published through their change tables,
        // installed before the publication needs them (docs/conflicts.md).
        let conflicts = ConflictSetup(config: config, tables: preflight.tables, connections: preflight.connections)
        if !conflicts.problems.isEmpty {
            return .failure(Refusal(message: conflicts.problems.map { "mmlite: conflict handling: \($0)" }.joined(separator: "\n")))
        }
        do {
            var plan = try Planner(config: config, tables: conflicts.publishedTables).plan(states: preflight.states)
            plan.steps = try conflicts.steps(nodes: MeshView(config: config, states: preflight.states).members) + plan.steps
            return .success(plan)
        } catch let error as ConflictSQL.GenerationError {
            return .failure(Refusal(message: "mmlite: conflict handling: \(error.message)"))
        } catch {
            return .failure(Refusal(message: "mmlite: cannot plan: \(error)"))
        }
    }

    /// Probe only what this plan relies on.
    func probes(for plan: Plan) -> ProbeRequest {
        var request = ProbeRequest()
        for step in plan.steps {
            if step.loadsPlugin { request.plugin.insert(step.node) }
            if let link = step.usesPeerLink { request.peers.insert(link) }
        }
        return request
    }

    func refuse(_ failures: [CheckResult], config: MeshConfig) -> ExitStatus? {
        guard !failures.isEmpty else { return nil }
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

    /// How often a step rolled back for a deadlock or serialization failure is tried.
    static let attempts = 5

    /// Runs the steps in order; on a failure says what was done and what not, and the exit code.
    func execute(_ plan: Plan, connections: Connections) -> ExitStatus? {
        for (index, step) in plan.steps.enumerated() {
            console.debug("[\(step.node)] \(step.displaySQL)")
            var failure: String? = nil
            var connectionLost = false
            if let connection = connections[step.node] ?? connections.reconnect(step.node) {
                // A step is one transaction: one PostgreSQL rolled back for a
                // deadlock or a serialization failure is simply run again.
                for attempt in 1...Self.attempts {
                    do {
                        try connection.execute(step.sql)
                        failure = nil
                        break
                    } catch let error as PGError {
                        failure = console.redact(error.description)
                        connectionLost = error.kind == .connection || !connection.isOpen
                        guard let state = SQLState(error.sqlState), state.isTransient, attempt < Self.attempts else { break }
                        console.print("  [\(index + 1)/\(plan.steps.count)] \(step.node): \(console.redact(error.message)); running it again (attempt \(attempt + 1) of \(Self.attempts))")
                        Thread.sleep(forTimeInterval: 0.2 * Double(attempt))
                    } catch {
                        failure = console.redact("\(error)")
                        break
                    }
                }
            } else {
                failure = "cannot connect to \(step.node)"
                connectionLost = true
            }
            if let failure { return stopped(plan, at: index, failure: failure, connectionLost: connectionLost) }
            console.print("  [\(index + 1)/\(plan.steps.count)] \(step.node): \(step.summary) ... done")
            context.hooks.afterStep?(index, step)
        }
        return nil
    }

    func stopped(_ plan: Plan, at index: Int, failure: String, connectionLost: Bool) -> ExitStatus {
        let step = plan.steps[index]
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
}
