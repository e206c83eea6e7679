import ClusterHarness
import Foundation
import PostgresClient

/// Scenario 1: the same WAL decoded by a `pgoutput` slot and an `mmlite` slot.
///
/// Both slots are created before the workload, so both decode exactly the same
/// WAL. Decoding uses `pg_logical_slot_peek_binary_changes` (which does not
/// consume), so the same WAL is decoded again in every run; the order of the
/// two plugins alternates between runs and one untimed pass of each warms the
/// caches first.
struct DecodeWorkload: Codable {
    let key: String
    let title: String
    /// Messages each plugin produced (the same in every run).
    var messages: [String: Int] = [:]
    /// Seconds per run and plugin.
    var seconds: [String: [Double]] = [:]
    /// pgoutput time / mmlite time, per run (paired: same run, adjacent).
    var ratios: [Double] = []

    init(key: String, title: String) {
        self.key = key
        self.title = title
    }

    func messagesPerSecond(_ plugin: String) -> Stat {
        Stat((seconds[plugin] ?? []).map { Double(messages[plugin] ?? 0) / $0 })
    }
}

struct DecodeScenario {
    let installation: PGInstallation
    let runs: Int
    let bigRows: Int
    let smallTransactions: Int

    static let plugins = ["pgoutput", "mmlite"]

    func run() throws -> [DecodeWorkload] {
        let harness = try ClusterHarness()
        defer { harness.destroyAll() }
        let cluster = try harness.startCluster(name: "decode", installation: installation, settings: Bench.clusterSettings)
        say("decode: cluster \(cluster)")
        try cluster.execute("CREATE TABLE dec_t (id bigint PRIMARY KEY, v bigint NOT NULL, pad text NOT NULL)")
        try cluster.execute("CREATE PUBLICATION dec_pub FOR TABLE dec_t")
        try cluster.execute("SELECT pg_replication_origin_create('bench_remote_node')")

        var results: [DecodeWorkload] = []
        var next = 1
        // 1. one big transaction
        results.append(try measure(cluster, DecodeWorkload(key: "big_txn", title: "one \(compact(bigRows))-row transaction"), workload: {
            try cluster.execute("INSERT INTO dec_t SELECT g, g, repeat('x', 32) FROM generate_series(\(next), \(next + bigRows - 1)) g")
            next += bigRows
        }))
        // 2. many single-row transactions, all local
        results.append(try measure(cluster, DecodeWorkload(key: "small_txns", title: "\(compact(smallTransactions)) single-row transactions"), workload: {
            try cluster.execute(Self.loop(from: next, count: smallTransactions, halfOrigin: false))
            next += smallTransactions
        }))
        // 3. the same, every second transaction carrying a replication origin
        results.append(try measure(cluster, DecodeWorkload(key: "half_origin", title: "\(compact(smallTransactions)) single-row transactions, half with an origin"), workload: {
            try cluster.execute(Self.loop(from: next, count: smallTransactions, halfOrigin: true))
            next += smallTransactions
        }))
        let errors = cluster.logErrors()
        if !errors.isEmpty { say("decode: server log errors:\n" + errors.joined(separator: "\n")) }
        return results
    }

    /// A DO block committing one single-row transaction per iteration; with
    /// `halfOrigin`, every even one runs with a session replication origin set
    /// (as an apply worker's transactions do).
    static func loop(from first: Int, count: Int, halfOrigin: Bool) -> String {
        let body = halfOrigin
            ? """
              IF i % 2 = 0 THEN PERFORM pg_replication_origin_session_setup('bench_remote_node'); END IF;
              INSERT INTO dec_t VALUES (i, i, repeat('y', 32));
              COMMIT;
              IF i % 2 = 0 THEN PERFORM pg_replication_origin_session_reset(); END IF;
              """
            : """
              INSERT INTO dec_t VALUES (i, i, repeat('y', 32));
              COMMIT;
              """
        return "DO $$ BEGIN FOR i IN \(first)..\(first + count - 1) LOOP \(body) END LOOP; END $$"
    }

    func measure(_ cluster: Cluster, _ initial: DecodeWorkload, workload: () throws -> Void) throws -> DecodeWorkload {
        var result = initial
        let connection = try cluster.connect()
        for plugin in Self.plugins {
            _ = try connection.execute("SELECT pg_create_logical_replication_slot('dec_\(plugin)', '\(plugin)')")
        }
        let generation = try timed(workload)
        say("decode: \(result.title): generated in \(fmt(generation, 1)) s")
        // Decode only what is flushed (peek stops at the flush point).
        _ = try connection.execute("SELECT pg_current_wal_flush_lsn()")
        func decode(_ plugin: String) throws -> (Int, Double) {
            var count = 0
            let seconds = try timed {
                let value = try connection.execute(
                    "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('dec_\(plugin)', NULL, NULL, 'proto_version', '1', 'publication_names', 'dec_pub')"
                ).scalar
                count = Int(value ?? "") ?? -1
            }
            return (count, seconds)
        }
        for plugin in Self.plugins { result.messages[plugin] = try decode(plugin).0 }  // warm-up
        for run in 0..<runs {
            let order = run % 2 == 0 ? Self.plugins : Self.plugins.reversed()
            var times: [String: Double] = [:]
            for plugin in order {
                let (count, seconds) = try decode(plugin)
                guard count == result.messages[plugin] else {
                    throw BenchError("decode: \(plugin) produced \(count) messages, earlier \(result.messages[plugin] ?? -1)")
                }
                times[plugin] = seconds
                result.seconds[plugin, default: []].append(seconds)
            }
            result.ratios.append((times["pgoutput"] ?? .nan) / (times["mmlite"] ?? .nan))
        }
        for plugin in Self.plugins {
            _ = try connection.execute("SELECT pg_drop_replication_slot('dec_\(plugin)')")
        }
        say("decode: \(result.title): pgoutput \(result.messages["pgoutput"] ?? 0) msgs \(mmm(Stat(result.seconds["pgoutput"] ?? []), 3)) s; mmlite \(result.messages["mmlite"] ?? 0) msgs \(mmm(Stat(result.seconds["mmlite"] ?? []), 3)) s; ratio \(mmm(Stat(result.ratios)))")
        return result
    }
}
