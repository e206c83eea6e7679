import ArgumentParser
import Foundation
import MMLiteCore
import PostgresClient

struct PartCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "part",
        abstract: "Remove a node from the mesh: its subscriptions, slots and publication everywhere.",
        discussion: """
        If NODE is reachable, first takes the tables out of NODE's publication (what NODE commits from then on stays on NODE; finish a started part by running it again), waits until every other node has applied all of NODE's changes up to there (bounded by --timeout), so they all end with the same data, then drops the members' subscriptions from NODE and their slots for it, and NODE's own subscriptions, slots and publication. If NODE is down, --force drops the other nodes' slots for it (which would otherwise retain WAL until their disks fill) and their subscriptions from it, and says up to where each node had applied NODE's changes. Afterwards remove NODE from the configuration file.

        Exit code: 0 done, 2 refused, 69 a node is unreachable (without --force for NODE), 75 stopped part-way (re-run to finish), 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The node to remove.") var node: String
    @Flag(help: "Do not wait for NODE's changes to reach the others; needed when NODE is down.") var force = false
    @Option(help: ArgumentHelp("Longest wait for the others to apply NODE's changes (and for each worker or slot to stop).", valueName: "seconds"))
    var timeout: Double = 300

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        let config = try loadConfig(global.config, console: context.console)
        try requireNode(node, in: config, path: global.config, hint: "; keep it in the file until it is parted")
        let request = PartProcedure.Request(config: config, configPath: global.config, node: node, force: force, timeout: timeout)
        return try PartRunner(request: request, context: context).run()
    }
}

/// Performs the actions of a `PartProcedure`.
final class PartRunner {
    let request: PartProcedure.Request
    let console: Console
    let io: ProcedureIO
    private var connections: Connections?

    init(request: PartProcedure.Request, context: Context) {
        self.request = request
        console = context.console
        io = ProcedureIO(context: context, timeout: request.timeout, dryRun: false)
    }

    func run() throws -> ExitStatus {
        var procedure = PartProcedure(request)
        var action = procedure.start()
        while true {
            if case .finish(let outcome) = action { return io.conclude(outcome, config: request.config) }
            let event: PartProcedure.Event
            do { event = try perform(action) } catch let error as PGError {
                event = .failed(console.redact(error.description))
            }
            action = procedure.next(event)
        }
    }

    func connection(_ name: String) throws -> PGConnection {
        guard let connection = connections?[name] else { throw PGError(kind: .connection, message: "cannot connect to \(name)") }
        return connection
    }

    func perform(_ action: PartProcedure.Action) throws -> PartProcedure.Event {
        for statement in action.statements {
            console.debug("[\(statement.node)] \(statement.sql)")
            try connection(statement.node).execute(statement.sql)
        }
        switch action {
        case .observe:
            return .observed(observe())
        case .say(let line):
            console.print(line)
        case .startClock(let name):
            io.startClock(name)
        case .sayElapsed(let format, let clock):
            io.sayElapsed(format, clock: clock)
        case .readTransactionHorizon(let name):
            return .horizon(try connection(name).query(JoinSQL.transactionHorizon()).scalar)
        case .readCurrentPosition(let name):
            return .position(try connection(name).query(JoinSQL.currentPosition()).scalar.flatMap(LSN.init).map(Position.lsn))
        case .readAppliedPosition(let name, let subscription):
            return .position(try connection(name).query(JoinSQL.appliedPosition(subscription)).scalar.flatMap(LSN.init).map(Position.lsn))
        case .wait(let condition):
            return try io.wait(condition, on: try connection(condition.node), done: .done, timedOut: { .timedOut($0) }, failed: { .failed($0) })
        case .removeTables, .disableSubscription, .dropSubscription, .dropSlot, .dropPublication, .dropOrigin, .retireSequenceOffset, .finish:
            break
        }
        return .done
    }

    func observe() -> PartProcedure.Observation {
        let preflight = Preflight(config: request.config, console: console)
        connections = preflight.connections
        var unreachable: [String: String] = [:]
        for facts in preflight.unreachable { unreachable[facts.name] = facts.failure ?? "" }
        return PartProcedure.Observation(states: preflight.states, unreachable: unreachable)
    }
}
