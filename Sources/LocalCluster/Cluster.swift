import Foundation
import PostgresClient

/// One local PostgreSQL cluster on a loopback port, run by the server owner.
public final class Cluster: CustomStringConvertible {
    public enum ShutdownMode: String { case smart, fast, immediate }

    /// Who may connect how (pg_hba.conf).
    public enum Authentication: String, Sendable {
        /// initdb's `-A trust`: anyone, over TCP and the Unix socket, without a password.
        case trust
        /// Every TCP connection (replication included) must authenticate with
        /// scram-sha-256 (`password_encryption = scram-sha-256`); the superuser
        /// `postgres` has no password and is let in only over the Unix socket,
        /// which `conninfo`/`execute` then use. What a managed service looks like
        /// to a role that is not its superuser.
        case scram
    }

    public let name: String
    public let installation: PGInstallation
    public let dataDirectory: String
    public let logFile: String
    public let socketDirectory: String
    public private(set) var port: Int
    public let authentication: Authentication
    /// The database `conninfo`, `connect`, `execute` and `scalar` use when not given one.
    public var database = "postgres"

    /// Also for re-attaching to a cluster a harness started earlier (the
    /// sandbox: `mmlite sandbox down` stops clusters a previous process made).
    public init(name: String, installation: PGInstallation, directory: String, port: Int,
                authentication: Authentication = .trust) {
        self.name = name
        self.installation = installation
        self.dataDirectory = directory + "/" + name
        self.logFile = directory + "/" + name + ".log"
        self.socketDirectory = directory
        self.port = port
        self.authentication = authentication
    }

    public var description: String { "\(name) (PostgreSQL \(installation.version), port \(port))" }

    /// libpq connection string for `database` (default: `self.database`) as the
    /// superuser `postgres`: over TCP, or over the Unix socket with `.scram`.
    public func conninfo(database: String? = nil) -> String {
        let host = authentication == .scram ? socketDirectory : "127.0.0.1"
        return "host=\(host) port=\(port) dbname=\(database ?? self.database) user=postgres"
    }
    public var conninfo: String { conninfo() }

    /// libpq connection string over TCP (127.0.0.1) for `user`: what a client
    /// that is not on the server's machine uses. `extra` is appended verbatim.
    public func tcpConninfo(database: String? = nil, user: String, extra: String = "") -> String {
        "host=127.0.0.1 port=\(port) dbname=\(database ?? self.database) user=\(user)" + (extra.isEmpty ? "" : " " + extra)
    }

    public func connect(database: String? = nil, overrides: [String: String] = [:]) throws -> PGConnection {
        var settings = ["application_name": "mmlite-harness", "connect_timeout": "10"]
        settings.merge(overrides) { $1 }
        return try PGConnection(conninfo(database: database), overrides: settings)
    }

    /// Runs SQL on a fresh connection (simple protocol, several statements allowed).
    @discardableResult
    public func execute(_ sql: String, database: String? = nil) throws -> PGResult {
        try connect(database: database).execute(sql)
    }

    /// First column of the first row of `sql`.
    public func scalar(_ sql: String, database: String? = nil) throws -> String? {
        try execute(sql, database: database).scalar
    }

    // MARK: lifecycle

    /// pg_hba.conf of a `.scram` cluster.
    public static let scramHostBasedAuthentication = """
        # written by mmlite's LocalCluster (authentication: scram)
        # TYPE  DATABASE     USER      ADDRESS        METHOD
        local   all          postgres                 trust
        local   replication  postgres                 trust
        host    all          all       127.0.0.1/32   scram-sha-256
        host    replication  all       127.0.0.1/32   scram-sha-256

        """

    package func initialize(settings: [String: String]) throws {
        try runCommand(asServerOwner([installation.binary("initdb"), "-N", "-A", "trust", "-U", "postgres",
                                      "-E", "UTF8", "--locale=C", "-D", dataDirectory]))
        var settings = settings
        if authentication == .scram {
            settings["password_encryption"] = "scram-sha-256"
            // Not atomically: the file keeps its owner (the server's).
            try Self.scramHostBasedAuthentication.write(toFile: dataDirectory + "/pg_hba.conf", atomically: false, encoding: .utf8)
        }
        var lines = ["", "# written by mmlite's LocalCluster"]
        for (key, value) in settings.sorted(by: { $0.key < $1.key }) {
            lines.append("\(key) = \(value)")
        }
        let configuration = dataDirectory + "/postgresql.conf"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: configuration))
        handle.seekToEndOfFile()
        handle.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        try handle.close()
    }

    package func setPort(_ port: Int) throws {
        self.port = port
    }

    public func start() throws {
        try runCommand(asServerOwner([installation.binary("pg_ctl"), "-D", dataDirectory, "-l", logFile,
                                      "-w", "-t", "60",
                                      "-o", "-p \(port) -k \(socketDirectory) -c listen_addresses=127.0.0.1",
                                      "start"]))
    }

    public func stop(mode: ShutdownMode = .fast) throws {
        try runCommand(asServerOwner([installation.binary("pg_ctl"), "-D", dataDirectory, "-m", mode.rawValue,
                                      "-w", "-t", "60", "stop"]))
    }

    public func restart(mode: ShutdownMode = .fast) throws {
        try stop(mode: mode)
        try start()
    }

    /// Re-reads the configuration (`pg_ctl reload`).
    public func reload() throws {
        try runCommand(asServerOwner([installation.binary("pg_ctl"), "-D", dataDirectory, "reload"]))
    }

    public var isRunning: Bool {
        (try? runCommand(asServerOwner([installation.binary("pg_ctl"), "-D", dataDirectory, "status"]))) != nil
    }

    /// Stops the server (immediately) and deletes its files.
    public func destroy() {
        if FileManager.default.fileExists(atPath: dataDirectory + "/postmaster.pid") {
            _ = try? stop(mode: .immediate)
        }
        try? FileManager.default.removeItem(atPath: dataDirectory)
    }

    // MARK: logs

    /// The server log so far.
    public func serverLog() -> String {
        (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
    }
}
