import Foundation
import PostgresClient

/// One local PostgreSQL cluster on a loopback port, run by the server owner.
public final class Cluster: CustomStringConvertible {
    public enum ShutdownMode: String { case smart, fast, immediate }

    public let name: String
    public let installation: PGInstallation
    public let dataDirectory: String
    public let logFile: String
    public let socketDirectory: String
    public private(set) var port: Int

    /// Also for re-attaching to a cluster a harness started earlier (the
    /// sandbox: `mmlite sandbox down` stops clusters a previous process made).
    public init(name: String, installation: PGInstallation, directory: String, port: Int) {
        self.name = name
        self.installation = installation
        self.dataDirectory = directory + "/" + name
        self.logFile = directory + "/" + name + ".log"
        self.socketDirectory = directory
        self.port = port
    }

    public var description: String { "\(name) (PostgreSQL \(installation.version), port \(port))" }

    /// libpq connection string for `database` as the superuser `postgres`.
    public func conninfo(database: String = "postgres") -> String {
        "host=127.0.0.1 port=\(port) dbname=\(database) user=postgres"
    }
    public var conninfo: String { conninfo() }

    public func connect(database: String = "postgres", overrides: [String: String] = [:]) throws -> PGConnection {
        var settings = ["application_name": "mmlite-harness", "connect_timeout": "10"]
        settings.merge(overrides) { $1 }
        return try PGConnection(conninfo(database: database), overrides: settings)
    }

    /// Runs SQL on a fresh connection (simple protocol, several statements allowed).
    @discardableResult
    public func execute(_ sql: String, database: String = "postgres") throws -> PGResult {
        try connect(database: database).execute(sql)
    }

    /// First column of the first row of `sql`.
    public func scalar(_ sql: String, database: String = "postgres") throws -> String? {
        try execute(sql, database: database).scalar
    }

    // MARK: lifecycle

    package func initialize(settings: [String: String]) throws {
        try runCommand(asServerOwner([installation.binary("initdb"), "-N", "-A", "trust", "-U", "postgres",
                                      "-E", "UTF8", "--locale=C", "-D", dataDirectory]))
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
