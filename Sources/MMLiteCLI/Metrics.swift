import Foundation
import MMLiteCore
import PostgresClient

/// One observation of the mesh for Prometheus (`mmlite metrics`, and every
/// scrape of `mmlite exporter`). It observes with `status`'s own code
/// (`Status.observe` and `Status.assess`), read-only, and never lets one node
/// hold up the others: every node is observed on its own thread, with a
/// connect timeout and a statement timeout, and a node that has not answered
/// within `timeout` seconds is reported down (its thread is left to finish and
/// close its connection on its own).
public struct MetricsCollector: Sendable {
    public let configPath: String
    /// Seconds each node may take (connect + queries).
    public let timeout: Double
    public let console: Console

    public init(configPath: String, timeout: Double = 5, console: Console) {
        self.configPath = configPath
        self.timeout = timeout
        self.console = console
    }

    /// A node's observation, filled by its thread. The lock orders the
    /// thread's results against the collector giving up on it (`abandon`).
    private final class Observation: @unchecked Sendable {
        let lock = NSLock()
        var connection: PGConnection?
        var status: NodeStatus
        var state: NodeState?
        var conflicts: [MetricsSnapshot.ConflictCount] = []
        var seconds: Double?
        /// Set when the collector stops waiting: the thread's results are dropped.
        var abandoned = false
        /// The open connection's socket while the thread queries (-1: none).
        private var socket: Int32 = -1
        init(_ status: NodeStatus) { self.status = status }

        /// Records the socket; false if the collector already gave up.
        func connected(socket: Int32) -> Bool {
            lock.lock(); defer { lock.unlock() }
            guard !abandoned else { return false }
            self.socket = socket
            return true
        }

        /// The thread's results; false (keep nothing, close it) if the collector gave up.
        func finish(connection: PGConnection, status: NodeStatus, state: NodeState?, conflicts: [MetricsSnapshot.ConflictCount], seconds: Double) -> Bool {
            lock.lock(); defer { lock.unlock() }
            socket = -1
            guard !abandoned else { return false }
            self.connection = connection
            self.status = status
            self.state = state
            self.conflicts = conflicts
            self.seconds = seconds
            return true
        }

        func finish(error: String, seconds: Double) {
            lock.lock(); defer { lock.unlock() }
            socket = -1
            guard !abandoned else { return }
            status.error = error
            self.seconds = seconds
        }

        /// The collector stops waiting (call with the lock held): a query in
        /// flight ends at once, its thread then finds `abandoned` and closes.
        func abandon(timeout: Double) {
            abandoned = true
            status.error = "no answer within \(Exposition.format(timeout)) s"
            if socket >= 0 { shutdown(socket, Int32(SHUT_RDWR)) }
        }
    }

    /// Reads the configuration (a CLIError if it is unusable) and observes every node.
    public func collect() throws -> MetricsSnapshot {
        let started = Date()
        let config = try loadConfig(configPath, console: console)
        let status = Status(configPath: configPath, format: .table, check: false, thresholds: Thresholds(), context: Context(console: console))
        // Status only reads its fields (and the console is thread-safe): one copy for every node's thread.
        let shared = UncheckedBox(status)
        let group = DispatchGroup()
        let observations = config.nodes.map { node in Observation(NodeStatus(name: node.name, dsn: DSN.masked(node.dsn), reachable: false)) }
        for (node, observation) in zip(config.nodes, observations) {
            group.enter()
            Thread.detachNewThread { [self] in
                defer { group.leave() }
                observe(node, into: observation, status: shared.value, config: config)
            }
        }
        // Every node gets the same deadline; a node past it is down for this scrape.
        _ = group.wait(timeout: .now() + timeout + 1)
        var open: [String: PGConnection] = [:], errors: [String: String] = [:]
        var nodes: [NodeStatus] = [], states: [String: NodeState] = [:]
        var conflicts: [String: [MetricsSnapshot.ConflictCount]] = [:], seconds: [String: Double] = [:]
        for observation in observations {
            observation.lock.lock()
            if observation.connection == nil && observation.status.error == nil { observation.abandon(timeout: timeout) }
            let name = observation.status.name
            nodes.append(observation.status)
            if let connection = observation.connection, observation.status.reachable { open[name] = connection }
            else if let connection = observation.connection { connection.close() }
            if !observation.status.reachable { errors[name] = observation.status.error }
            states[name] = observation.state
            conflicts[name] = observation.conflicts
            seconds[name] = observation.seconds
            observation.lock.unlock()
        }
        let connections = Connections(config: config, open: open, errors: errors)
        defer { for connection in open.values { connection.close() } }
        let links = status.assess(MeshView(config: config, states: states), nodes: nodes, connections: connections)
        for node in nodes where !node.reachable { console.debug("\(node.name): \(node.error ?? "unreachable")") }
        let snapshotNodes = nodes.map { Self.snapshotNode($0, versionNumber: states[$0.name]?.versionNumber,
                                                          conflicts: conflicts[$0.name] ?? [], seconds: seconds[$0.name]) }
        return MetricsSnapshot(mesh: config.mesh.name, nodes: snapshotNodes, links: links,
                               scrapeSeconds: Date().timeIntervalSince(started))
    }

    /// One node, on its own thread: connect, observe as `status` does, count conflicts.
    private func observe(_ node: NodeConfig, into observation: Observation, status: Status, config: MeshConfig) {
        let begin = Date()
        let connection: PGConnection
        do {
            connection = try Connections.connect(node.dsn, connectTimeout: max(1, Int(timeout.rounded(.up))))
        } catch {
            observation.finish(error: console.message(of: error), seconds: Date().timeIntervalSince(begin))
            return
        }
        // From here a collector that stops waiting shuts the socket down, which ends any wait on the server.
        guard observation.connected(socket: connection.socket) else { connection.close(); return }
        var nodeStatus: NodeStatus?, state: NodeState?, conflicts: [MetricsSnapshot.ConflictCount] = [], failure: String?
        do {
            // Read-only, and no query of a scrape waits long on the server.
            try connection.execute("SET default_transaction_read_only = on; SET statement_timeout = \(max(100, Int(timeout * 1000)))")
            (nodeStatus, state) = status.observe(node, connections: Connections(config: config, open: [node.name: connection], errors: [:]))
            if nodeStatus?.reachable == true, nodeStatus?.conflictLogRows != nil {
                conflicts = (try? connection.query(MetricsSQL.conflictsByTableAndKind).named.compactMap { row in
                    guard let table = row["table_name"], let kind = row["kind"], let rows = row.int64("entries") else { return nil }
                    return MetricsSnapshot.ConflictCount(table: table, kind: kind, rows: rows)
                }) ?? []
            }
        } catch {
            failure = console.message(of: error)
        }
        let seconds = Date().timeIntervalSince(begin)
        let kept = failure == nil && nodeStatus != nil
            && observation.finish(connection: connection, status: nodeStatus!, state: state, conflicts: conflicts, seconds: seconds)
        if !kept {
            if let failure { observation.finish(error: failure, seconds: seconds) }
            connection.close()
        }
    }

    static func snapshotNode(_ node: NodeStatus, versionNumber: Int?, conflicts: [MetricsSnapshot.ConflictCount], seconds: Double?) -> MetricsSnapshot.Node {
        var entry = MetricsSnapshot.Node(name: node.name, up: node.reachable)
        entry.serverVersion = node.version
        entry.serverVersionNumber = versionNumber
        entry.currentLSN = node.currentLSN
        entry.scrapeSeconds = seconds
        guard node.reachable else { return entry }
        entry.openMigrations = node.openMigrations.count
        entry.conflictLogRows = node.conflictLogRows
        entry.conflictLogBytes = node.conflictLogBytes
        entry.conflicts = conflicts
        if node.conflictLogBytes != nil || node.changeTables > 0 || node.versionTables > 0 {
            entry.changeTablesBytes = node.changeBytes
            entry.changeTablesRows = node.changeRows
            entry.versionTablesBytes = node.versionBytes
            entry.versionTablesRows = node.versionRows
        }
        entry.sequenceOffset = node.sequenceOffset
        return entry
    }
}

/// `mmlite metrics`: the exposition once, on stdout.
struct MetricsOnce {
    let collector: MetricsCollector

    func run() throws -> ExitStatus {
        let text = try collector.collect().exposition
        collector.console.print(text.hasSuffix("\n") ? String(text.dropLast()) : text)
        return .ok
    }
}

/// Hands a value that is only read to other threads.
private final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
