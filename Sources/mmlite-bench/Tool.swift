import ClusterHarness
import Foundation
import PostgresClient

/// The `mmlite` command-line tool, for the scenarios that need its commands
/// (`join`, conflict handling).
struct MMLiteTool {
    let path: String
    let workDirectory: String

    @discardableResult
    func call(_ arguments: [String]) throws -> String {
        let result = try runProgram([path] + arguments, workDirectory: workDirectory)
        guard result.code == 0 else {
            throw BenchError("mmlite \(arguments.joined(separator: " ")) failed (exit \(result.code)):\n\(result.err.suffix(3000))\(result.out.suffix(2000))")
        }
        return result.out
    }

    /// A mesh config for `nodes` replicating `tables`; `extra` is appended verbatim.
    /// `meshSettings`: more `[mesh]` lines; `extra`: TOML after the nodes.
    func writeConfig(name: String, tables: [String], nodes: [Cluster], meshSettings: String = "", extra: String = "") throws -> String {
        var text = "[mesh]\nname = \"bench\"\ntables = [\(tables.map { "\"\($0)\"" }.joined(separator: ", "))]\n" + meshSettings
        for node in nodes {
            text += "\n[[nodes]]\nname = \"\(node.name)\"\ndsn = \"\(node.conninfo)\"\n"
        }
        text += extra
        let path = workDirectory + "/\(name).toml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

// MARK: scenario 3: join copy

struct JoinRun: Codable {
    var joinSeconds: Double
    var dumpSeconds: Double
    var contentEqual: Bool
}

struct JoinScenario {
    let installation: PGInstallation
    let tool: MMLiteTool
    let rows: Int
    let workDirectory: String

    static let table = "CREATE TABLE join_t (id bigint PRIMARY KEY, v bigint NOT NULL, at timestamptz NOT NULL, pad text NOT NULL)"

    /// Fresh clusters: a running 2-node mesh n1 + n2 (built by `mmlite apply`)
    /// holding the same `rows` rows; `mmlite join n3 --from n1` copies them into
    /// n3, `pg_dump | psql` into dump1 (order alternates between runs).
    func run(number: Int) throws -> JoinRun {
        let harness = try ClusterHarness()
        defer { harness.destroyAll() }
        let source = try harness.startCluster(name: "n1", installation: installation, settings: Bench.clusterSettings)
        let peer = try harness.startCluster(name: "n2", installation: installation, settings: Bench.clusterSettings)
        let joiner = try harness.startCluster(name: "n3", installation: installation, settings: Bench.clusterSettings)
        let dumpTarget = try harness.startCluster(name: "dump1", installation: installation, settings: Bench.clusterSettings)
        for node in [source, peer, joiner, dumpTarget] { try node.execute(Self.table) }
        for node in [source, peer] {
            try node.execute("INSERT INTO join_t SELECT g, g, '2026-01-01'::timestamptz + g * interval '1 second', md5(g::text) FROM generate_series(1, \(rows)) g")
            try node.execute("VACUUM ANALYZE join_t")
        }
        let expected = try source.fingerprint(of: "join_t")
        let mesh = try tool.writeConfig(name: "join-mesh", tables: ["public.join_t"], nodes: [source, peer])
        try tool.call(["apply", "-c", mesh])

        func dump() throws -> Double {
            let bin = installation.bindir
            let pipeline = "set -o pipefail; \(shellQuote(bin + "/pg_dump")) --data-only --table=public.join_t -d \(shellQuote(source.conninfo)) | \(shellQuote(bin + "/psql")) -X -q -v ON_ERROR_STOP=1 -d \(shellQuote(dumpTarget.conninfo)) >/dev/null"
            var outcome: (code: Int32, out: String, err: String) = (0, "", "")
            let seconds = try timed { outcome = try runProgram(["/bin/bash", "-c", pipeline], workDirectory: workDirectory) }
            guard outcome.code == 0 else { throw BenchError("pg_dump | psql failed: \(outcome.err)") }
            return seconds
        }
        func join() throws -> Double {
            let all = try tool.writeConfig(name: "join-all", tables: ["public.join_t"], nodes: [source, peer, joiner])
            return try timed { try tool.call(["join", "n3", "--from", "n1", "-c", all]) }
        }
        var dumpSeconds = 0.0, joinSeconds = 0.0
        if number % 2 == 0 {
            dumpSeconds = try dump(); joinSeconds = try join()
        } else {
            joinSeconds = try join(); dumpSeconds = try dump()
        }
        let equal = try joiner.fingerprint(of: "join_t") == expected && dumpTarget.fingerprint(of: "join_t") == expected
        say("join: run \(number + 1): mmlite join \(fmt(joinSeconds)) s, pg_dump|psql \(fmt(dumpSeconds)) s, content equal \(equal)")
        return JoinRun(joinSeconds: joinSeconds, dumpSeconds: dumpSeconds, contentEqual: equal)
    }
}

// MARK: scenario 4: conflict handling overhead

/// The three meshes each conflicts run builds: plain replication, and
/// `public.bench_t` opted in to last-update-wins applied by the native
/// trigger (`conflict_apply = "auto"`, the default) or by the SQL one.
/// (`CodingKeyRepresentable`: results.json keeps per-mode figures as JSON
/// objects keyed by the mode's name.)
enum ConflictMode: String, CaseIterable, Codable, CodingKeyRepresentable {
    case plain, native, sql

    var description: String {
        switch self {
        case .plain: "without conflict handling"
        case .native: "with conflict handling, native apply"
        case .sql: "with conflict handling, SQL apply"
        }
    }
}

struct ConflictRun: Codable {
    /// Seconds to apply a backlog of `transactions` on the subscriber, per mode.
    var applySeconds: [ConflictMode: Double]
    /// Local pgbench TPS on the publisher, per mode.
    var localTPS: [ConflictMode: Double]
    var contentEqual: Bool
}

struct ConflictScenario {
    let installation: PGInstallation
    let tool: MMLiteTool
    let mesh: MeshScenario
    let transactions: Int

    /// Fresh 2-node meshes built by `mmlite apply`, one per mode (the order
    /// rotates between runs). Local cost: unthrottled pgbench on n1. Apply
    /// throughput: n2's subscription from n1 disabled, `transactions` written
    /// on n1, enabled, timed until n1's marker arrives on n2.
    func run(number: Int) throws -> ConflictRun {
        var apply: [ConflictMode: Double] = [:], local: [ConflictMode: Double] = [:]
        var equal = true
        let modes = ConflictMode.allCases
        for offset in 0..<modes.count {
            let mode = modes[(offset + number) % modes.count]
            let harness = try ClusterHarness()
            defer { harness.destroyAll() }
            let nodes = try (1...2).map { try harness.startCluster(name: "n\($0)", installation: installation, settings: Bench.clusterSettings) }
            try mesh.createSchema(nodes, topology: .mmlite2)
            let extra = mode == .plain ? "" : "\n[tables.\"public.bench_t\"]\nconflicts = \"last-update-wins\"\n"
            let config = try tool.writeConfig(name: "conflicts-\(mode.rawValue)", tables: ["public.bench_t", "public.bench_marker"], nodes: nodes,
                                              meshSettings: mode == .sql ? "conflict_apply = \"sql\"\n" : "", extra: extra)
            try tool.call(["apply", "-c", config])
            if mode != .plain {
                // Measure the implementation the mode names, or nothing.
                let function = try nodes[1].scalar("SELECT tgfoid::regproc::text FROM pg_trigger WHERE tgname = 'mmlite_apply'") ?? ""
                let expected = mode == .native ? "mmlite.apply_change" : "mmlite.\"public.bench_t$apply\""
                guard function == expected else { throw BenchError("conflicts (\(mode.rawValue)): n2's apply trigger runs \(function), expected \(expected) (is mmlite.so installed?)") }
            }
            _ = try mesh.catchUp(nodes, writers: [nodes[0]], round: 1, timeout: 120)
            // Local write cost.
            let localResult = try mesh.load(nodes, topology: .native, rate: nil)
            local[mode] = localResult.meanTPSPerNode
            _ = try mesh.catchUp(nodes, writers: [nodes[0]], round: 2, timeout: 900)
            // Apply throughput of a backlog (of it alone: see settleSlots).
            mesh.settleSlots([nodes[0]])
            try nodes[1].execute("ALTER SUBSCRIPTION mmlite_bench_from_n1 DISABLE")
            let script = try mesh.scriptPath()
            let perClient = max(1, transactions / mesh.clients)
            let bench = try runProgram([mesh.pgbench, "-n", "-f", script, "-c", String(mesh.clients), "-j", String(mesh.clients),
                                 "-t", String(perClient), "-h", "127.0.0.1", "-p", String(nodes[0].port), "-U", "postgres",
                                 "-D", "base=\(MeshScenario.base(1))", "-D", "node=1", "-D", "nrows=\(mesh.preloadRows)", "postgres"],
                                workDirectory: mesh.workDirectory)
            guard bench.code == 0 else { throw BenchError("pgbench failed: \(bench.err)") }
            try nodes[0].execute("INSERT INTO bench_marker VALUES (1, 3)")
            let start = monotonicSeconds()
            try nodes[1].execute("ALTER SUBSCRIPTION mmlite_bench_from_n1 ENABLE")
            let arrived = waitUntil(timeout: 900, interval: 0.02) {
                try nodes[1].scalar("SELECT count(*) FROM bench_marker WHERE round = 3") == "1"
            }
            guard arrived else { throw BenchError("conflicts: backlog not applied on n2 within 900 s") }
            apply[mode] = monotonicSeconds() - start
            let fingerprints = try nodes.map { try $0.fingerprint(of: "bench_t") }
            equal = equal && Set(fingerprints).count == 1
            say("conflicts: run \(number) \(mode.description): local \(fmt(local[mode] ?? .nan, 0)) tps, backlog of \(perClient * mesh.clients) txns applied in \(fmt(apply[mode] ?? .nan, 2)) s (\(fmt(Double(perClient * mesh.clients) / (apply[mode] ?? .nan), 0)) txn/s), equal \(Set(fingerprints).count == 1)")
        }
        return ConflictRun(applySeconds: apply, localTPS: local, contentEqual: equal)
    }
}
