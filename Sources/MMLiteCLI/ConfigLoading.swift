import Foundation
import MMLiteCore
import PostgresClient

/// A usage error unless `name` is a node of the configuration file at `path`
/// (the message lists the nodes; `hint` is appended).
func requireNode(_ name: String, in config: MeshConfig, path: String, hint: String = "") throws {
    guard config.node(named: name) == nil else { return }
    throw CLIError(.usage, "\(name) is not a node in \(path) (nodes: \(config.nodes.map(\.name).joined(separator: ", ")))" + hint)
}

/// Loads the configuration file, with libpq itself validating every DSN.
func loadConfig(_ path: String, console: Console) throws -> MeshConfig {
    guard FileManager.default.fileExists(atPath: path) else {
        throw CLIError(.config, "no configuration file at \(path) (pass -c FILE, or try `mmlite sandbox up`, which writes one)")
    }
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
        throw CLIError(.config, "cannot read \(path): \(error.localizedDescription)")
    }
    do {
        let config = try MeshConfig.parse(text, file: path, validateDSN: { dsn in
            do {
                _ = try parseConninfo(dsn)
                return nil
            } catch let error as PGError {
                return DSN.redact(error.message, secrets: DSN.passwords(in: dsn))
            } catch {
                return "\(error)"
            }
        })
        console.addSecrets(config.secrets)
        return config
    } catch let error as ConfigError {
        throw CLIError(.config, "invalid configuration: \(error)")
    }
}
