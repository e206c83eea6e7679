import ClusterHarness
import Foundation
import PostgresClient
import Testing

@Suite("Restarts")
struct RestartTests {
    /// Both nodes write a stream of inserts while each node is restarted, first
    /// with a fast and then with an immediate (crash-like) shutdown. Afterwards
    /// both hold the same rows, every insert the client saw committed is there,
    /// and nothing was applied twice (a second apply would fail on the key).
    @Test("fast and immediate restarts mid-stream lose and duplicate nothing", arguments: installations)
    func restartsMidStream(_ installation: PGInstallation) throws {
        try withClusters(2, installation) { nodes in
            try originalProcedure(node1: nodes[0], node2: nodes[1])
            let lock = NSLock()
            var acknowledged: [[Int]] = [[], []]
            let writing = Atomic(true)
            try concurrently(3) { worker in
                if worker == 2 {
                    // The disturber: restart each node both ways while the writers run.
                    usleep(400_000)
                    for mode in [Cluster.ShutdownMode.fast, .immediate] {
                        for node in nodes {
                            try node.restart(mode: mode)
                            usleep(300_000)
                        }
                    }
                    usleep(300_000)
                    writing.set(false)
                    return
                }
                let node = nodes[worker]
                var connection: PGConnection? = nil
                var next = (worker + 1) * 1_000_000
                var mine: [Int] = []
                let deadline = Date().addingTimeInterval(120)  // bounded, whatever happens
                while (writing.get() || mine.count < 200) && Date() < deadline {
                    do {
                        if connection == nil || connection?.isOpen == false { connection = try node.connect() }
                        try connection?.execute("INSERT INTO users VALUES (\(next), 'w\(worker)', NULL)")
                        mine.append(next)
                        next += 1
                    } catch {
                        // Server going down: the row may or may not have committed. Use a
                        // new key so an unacknowledged commit can never be retried into a duplicate.
                        connection = nil
                        next += 1
                        usleep(50_000)
                    }
                }
                lock.lock(); acknowledged[worker] = mine; lock.unlock()
            }
            try barrier(nodes)
            try expectIdentical(nodes)
            for (worker, ids) in acknowledged.enumerated() {
                for node in nodes {
                    let present = try Int(node.scalar("SELECT count(*) FROM users WHERE id = ANY('{\(ids.map(String.init).joined(separator: ","))}'::bigint[])") ?? "") ?? -1
                    #expect(present == ids.count, "\(node.name) has \(present) of the \(ids.count) acknowledged inserts of writer \(worker)")
                }
            }
            #expect(acknowledged.allSatisfy { $0.count >= 200 })
            for node in nodes {
                #expect(!node.serverLog().contains("duplicate key"), "\(node.name) applied a change twice")
            }
            // Every row that arrived by replication arrived exactly once.
            for (index, node) in nodes.enumerated() {
                let peerRows = try node.scalar("SELECT count(*) FROM users WHERE id / 1000000 = \(2 - index)")
                let applied = try node.scalar("SELECT count(*) FROM applied_log WHERE op = 'INSERT' AND tbl = 'users'")
                #expect(peerRows == applied, "\(node.name): \(peerRows ?? "?") peer rows, \(applied ?? "?") applied inserts")
            }
        }
        print(label(installation, "restarts mid-stream: nothing lost or duplicated"))
    }
}

/// A Bool shared between threads.
final class Atomic<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.lock(); defer { lock.unlock() }; return value }
    func set(_ newValue: Value) { lock.lock(); value = newValue; lock.unlock() }
}
