import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

/// The PostgreSQL these tests run on: PostgreSQL 15 (the production default
/// on Debian 12) if `MMLITE_PG_CONFIGS` has it, else its first entry, else
/// Debian's PostgreSQL 15. The CLI's behaviour does not depend on the major
/// except for the filter choice, which the unit tests cover.
let installation: PGInstallation? = {
    do {
        let all = try PGInstallation.fromEnvironment()
        return all.first { $0.major == 15 } ?? all.first
    } catch {
        print("CLITests: no PostgreSQL installation: \(error)")
        return nil
    }
}()

/// Every installation in `MMLITE_PG_CONFIGS` (13–18 under scripts/test), for
/// suites whose subject differs by major.
let everyInstallation: [PGInstallation] = (try? PGInstallation.fromEnvironment()) ?? []

/// A file of this repository, e.g. "docs/security.md".
func repositoryFile(_ path: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(path)
}

let testSchema = """
CREATE TABLE public.departments (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.users (id bigint PRIMARY KEY, name text NOT NULL, department_id int);
CREATE TABLE public.events (id bigint PRIMARY KEY, payload text);
"""

/// The result of one in-process `mmlite` run.
struct Run: CustomStringConvertible {
    var code: Int32
    var out: String
    var err: String
    var all: String { out + err }
    var description: String { "exit \(code)\n--- stdout\n\(out)--- stderr\n\(err)" }
}

/// Throwaway clusters plus a config file for them.
final class TestMesh {
    let harness: ClusterHarness
    let clusters: [Cluster]
    let configPath: String

    /// `installation`: the PostgreSQL to run (default: the suites' common one).
    /// `authentication`: `.scram` for clusters reachable over TCP only with a
    /// password (the superuser then over the Unix socket).
    init(_ count: Int, settings: [Int: [String: String]] = [:], schema: [Int: String] = [:],
         installation chosen: PGInstallation? = nil, authentication: Cluster.Authentication = .trust) throws {
        guard let installation = chosen ?? installation else { throw HarnessError("no PostgreSQL installation") }
        harness = try ClusterHarness()
        var started: [Cluster] = []
        for index in 1...count {
            let cluster = try harness.startCluster(name: "n\(index)", installation: installation, settings: settings[index] ?? [:],
                                                   authentication: authentication)
            try cluster.execute(schema[index] ?? testSchema)
            started.append(cluster)
        }
        clusters = started
        configPath = harness.directory + "/mmlite.toml"
    }

    deinit { harness.destroyAll() }

    subscript(_ index: Int) -> Cluster { clusters[index - 1] }

    /// Writes mmlite.toml: every cluster as n1..nN, plus `extraNodes` TOML.
    @discardableResult
    func writeConfig(tables: [String] = ["public.users", "public.departments"], dsn: [Int: String] = [:],
                     extraNodes: String = "", mesh: String = "shop", meshSettings: String = "") throws -> String {
        var text = """
        [mesh]
        name = "\(mesh)"
        tables = [\(tables.map { "\"\($0)\"" }.joined(separator: ", "))]

        """
        // Right after `tables`, so that without settings every later line keeps its number.
        if !meshSettings.isEmpty { text += meshSettings + "\n" }
        for (offset, cluster) in clusters.enumerated() {
            text += """

            [[nodes]]
            name = "\(cluster.name)"
            dsn = "\(dsn[offset + 1] ?? cluster.conninfo)"

            """
        }
        text += extraNodes
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
        return text
    }

    func mmlite(_ arguments: [String], hooks: Hooks = Hooks()) -> Run {
        let buffer = OutputBuffer()
        let code = runMMLite(arguments + ["-c", configPath], context: Context(console: buffer.console(), hooks: hooks))
        return Run(code: code, out: buffer.out, err: buffer.err)
    }

    /// mmlite's objects on a node: "publication:NAME", "slot:NAME", "subscription:NAME".
    func objects(_ index: Int) throws -> [String] {
        try Self.objects(self[index])
    }

    static func objects(_ cluster: Cluster) throws -> [String] {
        let result = try cluster.execute("""
            SELECT 'publication:' || pubname FROM pg_publication WHERE pubname LIKE 'mmlite%'
            UNION ALL SELECT 'slot:' || slot_name FROM pg_replication_slots WHERE slot_name LIKE 'mmlite%'
            UNION ALL SELECT 'subscription:' || subname FROM pg_subscription WHERE subname LIKE 'mmlite%'
            ORDER BY 1
            """)
        return result.rows.compactMap { $0.first ?? nil }
    }

    /// Every running node holds no mmlite object.
    func expectUntouched(_ indices: [Int]? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for index in indices ?? Array(1...clusters.count) {
            #expect(try objects(index) == [], "node n\(index) was changed", sourceLocation: sourceLocation)
        }
    }

    /// The expected objects of a complete mesh on node `index`.
    func completeObjects(_ index: Int, mesh: String = "shop") -> [String] {
        let me = "n\(index)"
        let others = clusters.map(\.name).filter { $0 != me }
        return (["publication:mmlite_\(mesh)"] + others.map { "slot:mmlite_\(mesh)_\($0)" }
                + others.map { "subscription:mmlite_\(mesh)_from_\($0)" }).sorted()
    }

    /// Writes one row per node into `users` and waits until every node has all of them.
    func expectReplicates(base: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (offset, cluster) in clusters.enumerated() {
            try cluster.execute("INSERT INTO public.users VALUES (\(base + offset), 'from \(cluster.name)', NULL)")
        }
        let ids = (0..<clusters.count).map { String(base + $0) }
        let arrived = waitUntil(timeout: 30) {
            try clusters.allSatisfy { cluster in
                try cluster.scalar("SELECT count(*) FROM public.users WHERE id BETWEEN \(base) AND \(base + clusters.count - 1)") == "\(ids.count)"
            }
        }
        #expect(arrived, "every node's insert reached every node", sourceLocation: sourceLocation)
    }

    func logErrors() -> [String] { clusters.flatMap { $0.logErrors() } }
}

/// Swift 6: hand a non-Sendable value to a @Sendable hook (tests run it synchronously).
final class Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Runs a program to completion (ChildProcess: see why there). Returns the
/// exit status and stdout+stderr.
func spawnAndWait(_ arguments: [String]) throws -> (Int32, String) {
    let outputPath = "/tmp/mmlite-clitest-\(getpid())-\(UInt32.random(in: 0..<UInt32.max)).out"
    defer { unlink(outputPath) }
    let child = try ChildProcess(arguments, outputPath: outputPath)
    let status = child.wait()
    return (status, child.output)
}

/// What a failed convergence check needs to be diagnosed after the clusters
/// are gone: per node, the rows of `table` whose `key` differs between nodes,
/// with their version rows and logged conflicts (if the table is opted in).
func divergenceReport(_ clusters: [Cluster], table: String, key: String = "id") -> String {
    func rows(_ cluster: Cluster, _ sql: String) -> [String: [String]] {
        let result = (try? cluster.execute(sql).rows) ?? []
        return result.reduce(into: [:]) { $0[($1[0] ?? "?"), default: []].append($1[1] ?? "NULL") }
    }
    let contents = clusters.map { rows($0, "SELECT (to_jsonb(t)->>'\(key)'), to_jsonb(t)::text FROM \(table) t") }
    let keys = Set(contents.flatMap(\.keys)).filter { key in Set(contents.map { $0[key] ?? [] }).count > 1 }.sorted()
    guard !keys.isEmpty else { return "no differing \(key) in \(table)" }
    let versions = "mmlite.\"\(table)$versions\""
    var text = "differing \(key)s of \(table): \(keys.joined(separator: ", "))\n"
    for (index, cluster) in clusters.enumerated() {
        let versionRows = rows(cluster, "SELECT (to_jsonb(v)->>'\(key)'), to_jsonb(v)::text FROM \(versions) v")
        let conflictRows = rows(cluster, "SELECT key->>'\(key)', to_jsonb(c)::text FROM mmlite.conflicts c WHERE table_name = '\(table)' ORDER BY id")
        for key in keys {
            text += "\(cluster.name) \(key): row \(contents[index][key] ?? [])\n"
            text += "  version \(versionRows[key] ?? [])\n"
            for conflict in conflictRows[key] ?? [] { text += "  conflict \(conflict)\n" }
        }
    }
    return text
}
