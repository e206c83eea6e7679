import ClusterHarness
import Foundation
import PostgresClient
import Testing

/// The original mmlite README's two-node procedure, as written there.
@Suite("Original two-node procedure")
struct OriginalProcedureTests {
    /// Local writes on both nodes: inserts, updates, deletes, in several shapes.
    func writeOnBoth(node1: Cluster, node2: Cluster) throws -> (ChangeLog, ChangeLog) {
        var fromNode1 = ChangeLog()
        var fromNode2 = ChangeLog()
        try node1.execute("INSERT INTO departments VALUES (1, 'sales'), (2, 'ops')")
        fromNode1.insert("departments", 1); fromNode1.insert("departments", 2)
        try node2.execute("INSERT INTO departments VALUES (3, 'dev')")
        fromNode2.insert("departments", 3)
        for id in 1...50 {
            try node1.execute("INSERT INTO users VALUES (\(100_000 + id), 'n1-\(id)', 1)")
            fromNode1.insert("users", 100_000 + id)
            try node2.execute("INSERT INTO users VALUES (\(200_000 + id), 'n2-\(id)', 3)")
            fromNode2.insert("users", 200_000 + id)
        }
        // A multi-row transaction and single-row updates and deletes.
        try node1.execute("BEGIN; UPDATE users SET name = name || '!', version = version + 1 WHERE id BETWEEN 100001 AND 100010; DELETE FROM users WHERE id BETWEEN 100041 AND 100050; COMMIT")
        for id in 100_001...100_010 { fromNode1.update("users", id) }
        for id in 100_041...100_050 { fromNode1.delete("users", id) }
        try node2.execute("UPDATE users SET department_id = 1 WHERE id = 200001")
        fromNode2.update("users", 200_001)
        try node2.execute("DELETE FROM users WHERE id = 200002")
        fromNode2.delete("users", 200_002)
        // A node changes a row that came from the other node.
        try node2.execute("UPDATE users SET name = 'moved' WHERE id = 100020")
        fromNode2.update("users", 100_020)
        return (fromNode1, fromNode2)
    }

    func run(_ installation: PGInstallation, preexistingRows: Int, reverseSlotAfterCopy: Bool = false) throws {
        try withClusters(2, installation) { nodes in
            let (node1, node2) = (nodes[0], nodes[1])
            if preexistingRows > 0 {
                try node1.execute("INSERT INTO users SELECT g, 'before-' || g, NULL FROM generate_series(1, \(preexistingRows)) g")
            }
            try originalProcedure(node1: node1, node2: node2, reverseSlotAfterCopy: reverseSlotAfterCopy)
            #expect(try node2.scalar("SELECT count(*) FROM users") == "\(preexistingRows)", "copy_data = true copied node1's rows")

            let (fromNode1, fromNode2) = try writeOnBoth(node1: node1, node2: node2)
            try barrier(nodes)

            try expectIdentical(nodes)
            // Exactly once, nothing back: node1's apply worker wrote exactly node2's
            // changes; node2's wrote node1's (plus the rows its initial copy loaded).
            #expect(try appliedChanges(on: node1) == fromNode2.sorted)
            let copied = (1...max(1, preexistingRows)).prefix(preexistingRows).map { "users INSERT \($0)" }
            #expect(try appliedChanges(on: node2) == (fromNode1.entries + copied).sorted())
            #expect(try node1.scalar("SELECT count(*) FROM users") == "\(preexistingRows + 89)")
            expectCleanLogs(nodes)
        }
    }

    @Test("empty tables: both ways, exactly once, no echo", arguments: installations)
    func emptyTables(_ installation: PGInstallation) throws {
        try run(installation, preexistingRows: 0)
        print(label(installation, "original procedure, empty tables: passed"))
    }

    /// PostgreSQL 14+ tag the rows the table-sync worker copies with an origin,
    /// so the procedure works as written.
    @Test("rows already on node1, copied by copy_data = true (14+)", arguments: installations.filter { $0.major >= 14 })
    func preexistingRows(_ installation: PGInstallation) throws {
        try run(installation, preexistingRows: 1000)
        print(label(installation, "original procedure, 1000 pre-existing rows: passed"))
    }

    /// PostgreSQL 13's table-sync worker copies without an origin: with the
    /// procedure as written, node2's slot for node1 (created before the copy)
    /// sends the copied rows back and node1 stops on a duplicate key. This is
    /// the original README's caveat, measured.
    @Test("PostgreSQL 13: the procedure as written echoes copied rows", arguments: installations.filter { $0.major == 13 })
    func copyEchoesOn13(_ installation: PGInstallation) throws {
        try withClusters(2, installation) { nodes in
            let (node1, node2) = (nodes[0], nodes[1])
            try node1.execute("INSERT INTO users SELECT g, 'before-' || g, NULL FROM generate_series(1, 100) g")
            try originalProcedure(node1: node1, node2: node2)
            let echoed = waitUntil(timeout: 60) {
                node1.serverLog().contains("duplicate key value violates unique constraint \"users_pkey\"")
            }
            #expect(echoed, "the copied rows came back to node1")
        }
        print(label(installation, "original procedure echoes copied rows on 13: confirmed"))
    }

    /// mmlite's documented order, safe on every major including 13: create the
    /// reverse slot only after the copy finished.
    @Test("rows already on node1, reverse slot created after the copy (all majors)", arguments: installations)
    func preexistingRowsSafeOrder(_ installation: PGInstallation) throws {
        try run(installation, preexistingRows: 1000, reverseSlotAfterCopy: true)
        print(label(installation, "safe procedure, 1000 pre-existing rows: passed"))
    }

    /// Proves the tests above can fail: the same procedure with plain pgoutput
    /// sends every replicated change back, and the first echoed INSERT stops
    /// replication on a duplicate key.
    @Test("plain pgoutput echoes (the tests above can fail)", arguments: installations)
    func pgoutputEchoes(_ installation: PGInstallation) throws {
        try withClusters(2, installation) { nodes in
            let (node1, node2) = (nodes[0], nodes[1])
            try originalProcedure(node1: node1, node2: node2, plugin: "pgoutput")
            try node1.execute("INSERT INTO users VALUES (1, 'one', NULL)")
            let echoed = waitUntil(timeout: 60) {
                let log = node1.serverLog()
                return log.contains("duplicate key value violates unique constraint \"users_pkey\"")
                    || log.contains("conflict=insert_exists")  // PostgreSQL 18 words it so
            }
            #expect(echoed, "node1's own insert came back from node2 and failed on the duplicate key")
            #expect(try appliedChanges(on: node1).contains("users INSERT 1") == false,
                    "the echoed insert was rejected, not applied")
        }
        print(label(installation, "plain pgoutput echoes: confirmed"))
    }
}

@Test("PostgreSQL installations to test are available")
func installationsAvailable() {
    #expect(!installations.isEmpty, "set MMLITE_PG_CONFIGS or install postgresql-15")
    for installation in installations {
        #expect(installation.hasMMLitePlugin, "mmlite.so is not installed in \(installation.pkglibdir): run make install PG_CONFIG=\(installation.pgConfig)")
        print("mmlite tests run on PostgreSQL \(installation.version) (\(installation.pgConfig))")
    }
}
