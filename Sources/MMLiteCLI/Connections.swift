import Foundation
import MMLiteCore
import PostgresClient

/// One open connection per reachable node.
final class Connections {
    let config: MeshConfig
    private(set) var open: [String: PGConnection] = [:]
    private(set) var errors: [String: String] = [:]

    init(config: MeshConfig, console: Console) {
        self.config = config
        for node in config.nodes {
            do {
                open[node.name] = try Self.connect(node.dsn)
                console.debug("connected to \(node.name) (\(DSN.masked(node.dsn)))")
            } catch let error as PGError {
                errors[node.name] = console.redact(error.message)
            } catch {
                errors[node.name] = console.redact("\(error)")
            }
        }
    }

    /// Connections opened elsewhere (the metrics' observation opens them in parallel).
    init(config: MeshConfig, open: [String: PGConnection], errors: [String: String]) {
        self.config = config
        self.open = open
        self.errors = errors
    }

    /// `connectTimeout`: seconds; `nil` keeps the DSN's or PGCONNECT_TIMEOUT's, else 10.
    static func connect(_ dsn: String, connectTimeout: Int? = nil) throws -> PGConnection {
        var overrides = ["application_name": "mmlite"]
        if let connectTimeout {
            overrides["connect_timeout"] = String(connectTimeout)
        } else if DSN.value("connect_timeout", in: dsn) == nil && ProcessInfo.processInfo.environment["PGCONNECT_TIMEOUT"] == nil {
            overrides["connect_timeout"] = "10"
        }
        if DSN.value("application_name", in: dsn) != nil { overrides["application_name"] = nil }
        return try PGConnection(dsn, overrides: overrides)
    }

    subscript(name: String) -> PGConnection? { open[name] }

    /// Re-opens a node's connection (after it failed mid-command).
    func reconnect(_ name: String) -> PGConnection? {
        guard let node = config.node(named: name) else { return nil }
        open[name]?.close()
        open[name] = try? Self.connect(node.dsn)
        return open[name]
    }

    var unreachable: [String] { config.nodes.map(\.name).filter { open[$0] == nil } }
}

extension Console {
    /// What went wrong, masked: the server's message for a PostgreSQL error.
    func message(of error: Error) -> String {
        redact((error as? PGError)?.message ?? "\(error)")
    }

    /// A failure after connecting, masked: nil when the connection itself
    /// broke (that stays a connection error), else what the read could not do.
    func readError(_ error: Error) -> ReadError? {
        let pgError = error as? PGError
        if pgError?.kind == .connection { return nil }
        return ReadError(message: message(of: error), sqlState: SQLState(pgError?.sqlState))
    }
}
