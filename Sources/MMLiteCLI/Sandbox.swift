import Foundation
import LocalCluster
import MMLiteCore

/// `mmlite sandbox up/down`: local throwaway clusters forming a mesh.
struct Sandbox {
    static let defaultDirectory = "/tmp/mmlite-sandbox"
    static let database = "shop"
    static let mesh = "sandbox"

    let directory: String
    let context: Context

    var stateFile: String { directory + "/sandbox.json" }
    var configFile: String { directory + "/mmlite.toml" }

    struct State: Codable {
        struct Node: Codable {
            var name: String
            var port: Int
        }
        var pgConfig: String
        var version: String
        var nodes: [Node]
    }

    static let schema = """
        CREATE TABLE public.departments (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            name       text NOT NULL,
            created_on text NOT NULL DEFAULT current_setting('cluster_name')
        );
        CREATE TABLE public.users (
            id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            name          text NOT NULL,
            email         text,
            department_id uuid REFERENCES public.departments (id),
            created_on    text NOT NULL DEFAULT current_setting('cluster_name'),
            created_at    timestamptz NOT NULL DEFAULT now()
        );
        """

    /// The PostgreSQL to use: --pg-config, else `pg_config` on PATH (when its
    /// bindir has a server), else Debian's PostgreSQL 15.
    static func installation(_ pgConfig: String?) throws -> PGInstallation {
        if let pgConfig { return try PGInstallation(pgConfig: pgConfig) }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let candidate = String(directory) + "/pg_config"
            guard FileManager.default.isExecutableFile(atPath: candidate),
                  let installation = try? PGInstallation(pgConfig: candidate),
                  FileManager.default.isExecutableFile(atPath: installation.binary("postgres"))
            else { continue }
            return installation
        }
        let debian = "/usr/lib/postgresql/15/bin/pg_config"
        guard FileManager.default.isExecutableFile(atPath: debian) else {
            throw CLIError(.config, "no PostgreSQL server found: install one (Debian: apt-get install postgresql-15 postgresql-server-dev-15) or pass --pg-config /path/to/pg_config")
        }
        return try PGInstallation(pgConfig: debian)
    }

    func up(nodes count: Int, pgConfig: String?) throws -> ExitStatus {
        let console = context.console
        if FileManager.default.fileExists(atPath: stateFile) {
            throw CLIError(.config, "a sandbox already exists in \(directory): remove it with `mmlite sandbox down --dir \(directory)` (or pick another --dir)")
        }
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: directory), !entries.isEmpty {
            throw CLIError(.config, "\(directory) exists and is not empty: pick another --dir")
        }
        let installation: PGInstallation
        do { installation = try Self.installation(pgConfig) } catch let error as ClusterError {
            throw CLIError(.config, error.description)
        }
        guard installation.hasMMLitePlugin else {
            throw CLIError(.config, "the mmlite plugin is not installed for \(installation) (\(installation.pkglibdir)/mmlite.so is missing). Install it from the mmlite source tree with:\n  make install PG_CONFIG=\(installation.pgConfig)\nthen run `mmlite sandbox up` again.")
        }

        console.print("Starting \(count) PostgreSQL \(installation.version) clusters in \(directory) ...")
        let harness: ClusterDirectory
        do { harness = try ClusterDirectory(directory: directory) } catch {
            throw CLIError(.config, "cannot use \(directory): \(error)")
        }
        var state = State(pgConfig: installation.pgConfig, version: installation.version, nodes: [])
        var clusters: [Cluster] = []
        do {
            for index in 1...count {
                let name = "n\(index)"
                let cluster = try harness.startCluster(name: name, installation: installation,
                                                       settings: ["cluster_name": "'\(name)'"])
                clusters.append(cluster)
                state.nodes.append(.init(name: name, port: cluster.port))
                try writeState(state)
                try cluster.execute("CREATE DATABASE \(Self.database)")
                try cluster.execute(Self.schema, database: Self.database)
                console.print("  \(name): port \(cluster.port), log \(cluster.logFile)")
            }
        } catch {
            console.error("mmlite: could not start the sandbox: \(error)")
            harness.destroyAll()
            throw CLIError(.failure, "nothing is left running in \(directory)")
        }

        try writeConfig(clusters: clusters, version: installation.version)
        console.print("Wrote \(configFile).")
        console.print()
        console.print("$ mmlite apply -c \(configFile)")
        let applied = try Apply(configPath: configFile, dryRun: false, context: context).run()
        guard applied == .ok else {
            console.error("mmlite: apply did not finish; the clusters are still running (mmlite sandbox down --dir \(directory) removes them)")
            return applied
        }
        let first = clusters[0], second = clusters[1]
        console.print()
        console.print("""
            The sandbox is ready: \(count) nodes replicating public.departments and public.users to each other.
            Try it:

              psql "\(first.conninfo(database: Self.database))" -c "INSERT INTO departments (name) VALUES ('sales')"
              psql "\(second.conninfo(database: Self.database))" -c "INSERT INTO users (name, email) VALUES ('ada', 'ada@example.com')"
              psql "\(clusters[count - 1].conninfo(database: Self.database))" -c "SELECT name, created_on FROM departments UNION ALL SELECT name, created_on FROM users"

              mmlite status -c \(configFile)
              mmlite doctor -c \(configFile)

            When done: mmlite sandbox down --dir \(directory)
            """)
        return .ok
    }

    /// mmlite.toml for the sandbox's clusters.
    func writeConfig(clusters: [Cluster], version: String) throws {
        var toml = """
            # Written by `mmlite sandbox up` (PostgreSQL \(version), \(clusters.count) nodes).
            # Remove everything with: mmlite sandbox down --dir \(directory)
            [mesh]
            name = "\(Self.mesh)"
            tables = ["public.departments", "public.users"]

            """
        for cluster in clusters {
            toml += """

                [[nodes]]
                name = "\(cluster.name)"
                dsn = "host=127.0.0.1 port=\(cluster.port) dbname=\(Self.database) user=postgres"

                """
        }
        try toml.write(toFile: configFile, atomically: true, encoding: .utf8)
    }

    func writeState(_ state: State) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(state).write(to: URL(fileURLWithPath: stateFile))
    }

    func down() throws -> ExitStatus {
        let console = context.console
        guard let data = FileManager.default.contents(atPath: stateFile) else {
            if FileManager.default.fileExists(atPath: directory) {
                throw CLIError(.config, "\(directory) is not a sandbox (no sandbox.json): not touching it")
            }
            console.print("No sandbox in \(directory): nothing to remove.")
            return .ok
        }
        let state: State
        do { state = try JSONDecoder().decode(State.self, from: data) } catch {
            throw CLIError(.config, "cannot read \(stateFile): \(error)")
        }
        let installation = try? PGInstallation(pgConfig: state.pgConfig)
        for node in state.nodes {
            let pidFile = directory + "/" + node.name + "/postmaster.pid"
            if let installation {
                let cluster = Cluster(name: node.name, installation: installation, directory: directory, port: node.port)
                if FileManager.default.fileExists(atPath: pidFile) { try? cluster.stop(mode: .fast) }
                cluster.destroy()
            } else if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                      let pid = text.split(separator: "\n").first.flatMap({ Int32($0) }) {
                kill(pid, SIGQUIT)
            }
            console.print("  stopped \(node.name) (port \(node.port))")
        }
        do { try FileManager.default.removeItem(atPath: directory) } catch {
            throw CLIError(.failure, "could not remove \(directory): \(error.localizedDescription)")
        }
        console.print("Removed the sandbox in \(directory).")
        return .ok
    }
}
