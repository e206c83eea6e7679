import ArgumentParser
import Foundation
import MMLiteCore
import PostgresClient

struct JoinCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "join",
        abstract: "Add a configured node to the running mesh: copy its data from one member, online and exactly.",
        discussion: """
        Creates every other member's slot for NODE first, pauses SOURCE's subscriptions for a moment to read how far SOURCE applied each member and export a snapshot, copies every table in that snapshot, starts each member's slot exactly where the copy ends, then wires NODE in both ways and waits until it has caught up. User writes are never blocked. Re-run after an interruption: it continues (or redoes the copy). See docs/operations.md.

        Exit code: 0 joined (or already a member), 1 a statement failed before anything changed, 2 a check failed (nothing changed), 69 a node is unreachable, 75 stopped part-way (re-run to finish), 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The node to add (it must be in the configuration file).") var node: String
    @Option(help: ArgumentHelp("The member to copy the data from.", valueName: "node")) var from: String
    @Flag(help: "Create the tables missing on NODE from SOURCE's definitions first (pg_dump --schema-only).") var copySchema = false
    @Flag(help: "Copy into tables that are not empty (they are emptied first).") var force = false
    @Flag(help: "Print the procedure with the SQL per node and change nothing.") var dryRun = false
    @Option(help: ArgumentHelp("Longest wait for a member or NODE to catch up.", valueName: "seconds")) var timeout: Double = 600

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        let config = try loadConfig(global.config, console: context.console)
        for name in [node, from] { try requireNode(name, in: config, path: global.config) }
        let request = JoinProcedure.Request(config: config, configPath: global.config, node: node, source: from,
                                            copySchema: copySchema, force: force, dryRun: dryRun, timeout: timeout)
        return try JoinRunner(request: request, context: context).run()
    }
}

/// Performs the actions of a `JoinProcedure` (Core decides; this does the I/O).
final class JoinRunner {
    let request: JoinProcedure.Request
    let console: Console
    let io: ProcedureIO
    private var preflight: Preflight?
    /// The replication connection whose exported snapshot the copy reads.
    private var replication: PGConnection?

    init(request: JoinProcedure.Request, context: Context) {
        self.request = request
        console = context.console
        io = ProcedureIO(context: context, timeout: request.timeout, dryRun: request.dryRun)
    }

    var config: MeshConfig { request.config }
    var node: String { request.node }
    var source: String { request.source }

    func run() throws -> ExitStatus {
        defer { replication?.close() }
        var procedure = JoinProcedure(request)
        var action = procedure.start()
        while true {
            if case .finish(let outcome) = action {
                if outcome == .done && !request.dryRun {
                    console.print("")
                    console.print("Done: \(node) joined mesh \"\(config.mesh.name)\". Phase times: " + io.phaseTimes)
                    console.print("Check it with `mmlite status`.")
                }
                return io.conclude(outcome, config: config)
            }
            action = procedure.next(try event(for: action, procedure))
        }
    }

    /// Runs one action (in a dry run: shows it, and answers as a real run would).
    func event(for action: JoinProcedure.Action, _ procedure: JoinProcedure) throws -> JoinProcedure.Event {
        if request.dryRun, !action.statements(names: config.names).isEmpty {
            io.show(action.statements(names: config.names))
            return procedure.simulatedEvent(for: action)
        }
        do {
            return try perform(action)
        } catch let error as PGError {
            return .failed(console.redact(error.description))
        }
    }

    func connection(_ name: String) throws -> PGConnection {
        guard let connection = preflight?.connections[name] ?? preflight?.connections.reconnect(name) else {
            throw PGError(kind: .connection, message: "cannot connect to \(name)")
        }
        return connection
    }

    func position(_ sql: String, on name: String) throws -> JoinProcedure.Event {
        .position(try connection(name).query(sql).scalar.flatMap(LSN.init).map(Position.lsn))
    }

    func perform(_ action: JoinProcedure.Action) throws -> JoinProcedure.Event {
        switch action {
        case .observe:
            return .observed(observe())
        case .createSchema(let tables, _, _):
            do {
                try SchemaCopy(config: config, console: console).create(tables, from: source, sourceMajor: preflight?.states[source]?.major ?? 0, on: node)
            } catch let error as SchemaCopy.Failure {
                return .failed(error.message)
            }
            return .done
        case .run(let step):
            console.debug("[\(step.node)] \(step.displaySQL)")
            try connection(step.node).execute(step.sql)
            return .done
        case .check(let probes):
            preflight?.probe(ProbeRequest(plugin: probes.plugin, peers: probes.peers))
            return .checked(preflight?.evaluate(for: .join(node: node, source: source)) ?? [])
        case .beginPhase(let number, let title):
            io.beginPhase(number, title)
        case .endPhase(let number):
            io.endPhase(number)
        case .say(let line):
            console.print(line)
        case .startClock(let name):
            io.startClock(name)
        case .sayElapsed(let format, let clock):
            io.sayElapsed(format, clock: clock)
        case .dropSlot(let name, let slot):
            try connection(name).query(JoinSQL.dropSlot(slot))
        case .readSlotPosition(let name, let slot):
            return try position(JoinSQL.slotPosition(slot), on: name)
        case .createSlot(let name, let slot, let plugin):
            return try position(JoinSQL.createSlot(slot, plugin: plugin), on: name)
        case .wait(let condition):
            if case .workerStopped(_, let subscription) = condition { nudgePublisher(of: subscription) }
            return try io.wait(condition, on: try connection(condition.node), done: .done, timedOut: { .timedOut($0) }, failed: { .failed($0) })
        case .disableSubscription(let name, let subscription):
            try connection(name).execute(JoinSQL.disableSubscription(subscription))
        case .enableSubscription(let name, let subscription):
            try connection(name).execute(JoinSQL.enableSubscription(subscription))
        case .readAppliedPosition(let name, let subscription, _):
            return try position(JoinSQL.appliedPosition(subscription), on: name)
        case .exportSnapshot(let name, let slot, let plugin, let major):
            return try exportSnapshot(on: name, slot: slot, plugin: plugin, major: major)
        case .advanceSlot(let name, let slot, let target):
            try connection(name).query(JoinSQL.advanceSlot(slot, to: target.description))
        case .copy(let copy):
            try TableCopy(config: config, console: console).run(copy)
        case .releaseSnapshot:
            replication?.close()
            replication = nil
        case .observeMesh:
            return .mesh(try refreshedStates())
        case .readCurrentPosition(let name):
            return try position(JoinSQL.currentPosition(), on: name)
        case .dropOrigin(let name, let origin):
            try connection(name).query(JoinSQL.dropOrigin(origin))
        case .finish:
            break
        }
        return .done
    }

    /// An idle apply worker notices that its subscription was disabled only
    /// when it next wakes: after up to a second (PostgreSQL's apply loop
    /// sleeps up to 1 s between reads; the join's own slot creation on the
    /// peer has usually just woken it, so the pause waited the full second).
    /// An empty committed transaction on the publisher makes its walsender
    /// send a keepalive, which wakes the worker at once. Costs one
    /// transaction id; a failure only means the usual wait.
    func nudgePublisher(of subscription: String) {
        guard let publisher = config.nodes.first(where: { config.names.subscription(publisher: $0.name) == subscription })?.name,
              let connection = preflight?.connections[publisher] else { return }
        console.debug("[\(publisher)] \(JoinSQL.wakeSubscribers)")
        _ = try? connection.query(JoinSQL.wakeSubscribers)
    }

    /// Everything the procedure decides on before it changes anything.
    func observe() -> JoinProcedure.Observation {
        let preflight = Preflight(config: config, console: console)
        self.preflight = preflight
        var unreachable: [String: String] = [:]
        for facts in preflight.unreachable { unreachable[facts.name] = facts.failure ?? "" }
        let nodeFacts = preflight.facts.first { $0.name == node }
        let missing = preflight.tables.filter { nodeFacts?.tables[$0] == nil }
        let conflicts = ConflictSetup(config: config, tables: preflight.tables, connections: preflight.connections)
        var observation = JoinProcedure.Observation(
            states: preflight.states, unreachable: unreachable, tables: preflight.tables, missingOnNode: missing,
            conflictTables: conflicts.described, conflictProblems: conflicts.problems, conflictRegistries: conflicts.observed)
        if let connection = preflight.connections[node] {
            observation.copyMark = (try? connection.query(JoinSQL.originProgress(config.names.joinOrigin)).scalar)?.flatMap(LSN.init)
            observation.nonEmptyOnNode = preflight.tables.filter { !missing.contains($0) }.filter { table in
                (try? connection.query(JoinSQL.hasRows(table)).scalar) == "t"
            }
        }
        return observation
    }

    func exportSnapshot(on name: String, slot: String, plugin: String, major: Int) throws -> JoinProcedure.Event {
        guard let dsn = config.node(named: name)?.dsn else { return .failed("\(name) is not in the configuration") }
        let connection = try PGConnection(dsn, overrides: ["replication": "database", "application_name": "mmlite join"])
        replication = connection
        let command = JoinSQL.createSlotExportingSnapshot(slot: slot, plugin: plugin, major: major)
        console.debug("[\(name)] \(command)")
        let row = try connection.execute(command).first
        guard let point = row?["consistent_point"].flatMap(LSN.init), let snapshot = row?["snapshot_name"] else {
            return .failed("\(name): CREATE_REPLICATION_SLOT returned no consistent point or snapshot")
        }
        return .snapshot(consistentPoint: .lsn(point), name: snapshot)
    }

    /// This mesh's objects on every node again (they changed since the preflight).
    func refreshedStates() throws -> [String: NodeState] {
        guard let preflight else { return [:] }
        var states: [String: NodeState] = [:]
        for facts in preflight.facts {
            guard let connection = preflight.connections[facts.name] else { continue }
            states[facts.name] = try preflight.inspector.state(of: facts, connection, tables: preflight.tables)
        }
        return states
    }
}
