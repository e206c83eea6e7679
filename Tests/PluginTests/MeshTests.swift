import ClusterHarness
import Foundation
import PostgresClient
import Testing

@Suite("Full mesh")
struct MeshTests {
    /// Three nodes, each subscribed to the two others through mmlite slots, all
    /// writing at once: inserts, updates, deletes, multi-statement transactions
    /// and a TRUNCATE. Each node changes only keys it owns (no conflicts: that
    /// is a later feature), so the only way to end with different content is a
    /// lost, duplicated or echoed change.
    @Test("3 nodes writing concurrently end identical", arguments: installations)
    func threeNodesConverge(_ installation: PGInstallation) throws {
        try withClusters(3, installation) { nodes in
            try fullMesh(nodes)
            try writeConcurrentlyAndCompare(nodes)
        }
        print(label(installation, "3-node mesh, concurrent writers: identical"))
    }
}

/// Every node writes its own keys at once (batched inserts, updates, deletes,
/// a multi-row update, and on the third node a TRUNCATE); then every node must
/// hold identical content and every apply worker must have written exactly
/// the other nodes' changes — no loss, no duplicate, no echo.
func writeConcurrentlyAndCompare(_ nodes: [Cluster], rowsPerNode: Int = 1500) throws {
    var logs = [ChangeLog](repeating: ChangeLog(), count: nodes.count)
    let lock = NSLock()
    try concurrently(nodes.count) { index in
        let connection = try nodes[index].connect()
        let base = (index + 1) * 1_000_000
        var log = ChangeLog()
        try connection.execute("INSERT INTO departments VALUES (\(index + 1), 'dept of n\(index + 1)')")
        log.insert("departments", index + 1)
        var id = 0
        while id < rowsPerNode {
            // Batches of 10 inserts in one transaction, then single-row statements.
            let batch = (id..<min(id + 10, rowsPerNode)).map { "(\(base + $0), 'n\(index + 1)-\($0)', \(index + 1))" }
            try connection.execute("INSERT INTO users (id, name, department_id) VALUES \(batch.joined(separator: ","))")
            for k in id..<min(id + 10, rowsPerNode) { log.insert("users", base + k) }
            id += 10
            if id % 50 == 0 {
                let target = base + id - 25
                try connection.execute("UPDATE users SET version = version + 1, name = name || '*' WHERE id = \(target)")
                log.update("users", target)
                try connection.execute("DELETE FROM users WHERE id = \(target + 1)")
                log.delete("users", target + 1)
            }
            if index == nodes.count - 1 && id == 600 {
                // TRUNCATE replicates (and must not echo) like any change.
                try connection.execute("INSERT INTO events SELECT g, 'first' FROM generate_series(1, 300) g")
                try connection.execute("TRUNCATE events")
                try connection.execute("INSERT INTO events SELECT g, 'second' FROM generate_series(1, 200) g")
            }
        }
        try connection.execute("BEGIN; UPDATE users SET version = version + 10 WHERE id BETWEEN \(base) AND \(base + 99); COMMIT")
        let updated = try connection.query("SELECT id FROM users WHERE id BETWEEN $1 AND $2 ORDER BY id",
                                           ["\(base)", "\(base + 99)"]).rows.compactMap { $0[0].flatMap(Int.init) }
        for row in updated { log.update("users", row) }
        lock.lock(); logs[index] = log; lock.unlock()
    }
    try barrier(nodes)
    try expectIdentical(nodes)
    #expect(try nodes[0].scalar("SELECT count(*) FROM events WHERE payload = 'second'") == "200")
    #expect(try nodes[1].scalar("SELECT count(*) FROM events") == "200")
    let total = try Int(nodes[0].scalar("SELECT count(*) FROM users") ?? "") ?? 0
    #expect(total > nodes.count * rowsPerNode - nodes.count * 40, "several thousand rows: \(total)")
    // Each node's apply worker wrote exactly the other two nodes' changes.
    for (index, node) in nodes.enumerated() {
        let expected = logs.enumerated().filter { $0.offset != index }.flatMap { $0.element.entries }.sorted()
        let applied = try appliedChanges(on: node)
        #expect(applied.count == expected.count, "\(node.name): applied \(applied.count), peers made \(expected.count)")
        #expect(applied == expected)
    }
    expectCleanLogs(nodes)
}
