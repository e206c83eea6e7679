import Foundation

/// One PostgreSQL installation (server binaries + pg_config), e.g. Debian's
/// /usr/lib/postgresql/15 or an unpacked build from scripts/pg-builds.
public struct PGInstallation: Sendable, CustomStringConvertible {
    public let pgConfig: String
    public let bindir: String
    public let pkglibdir: String
    public let sharedir: String
    /// "15.20", "18.6"
    public let version: String
    public let major: Int
    /// Whether this minor knows `output_plugin_libraries` (2026 security
    /// fix). Older minors refuse to start if the setting is present.
    public let knowsOutputPluginLibraries: Bool

    public init(pgConfig: String) throws {
        guard FileManager.default.isExecutableFile(atPath: pgConfig) else {
            throw ClusterError("pg_config not found or not executable: \(pgConfig)")
        }
        func ask(_ flag: String) throws -> String {
            try runCommand([pgConfig, flag]).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        self.pgConfig = pgConfig
        bindir = try ask("--bindir")
        pkglibdir = try ask("--pkglibdir")
        sharedir = try ask("--sharedir")
        let versionLine = try ask("--version")  // "PostgreSQL 15.20 (Debian 15.20-0+deb12u1)"
        let words = versionLine.split(separator: " ")
        guard words.count >= 2 else { throw ClusterError("unexpected pg_config --version: \(versionLine)") }
        version = String(words[1])
        major = Int(version.prefix { $0.isNumber }) ?? 0
        let sample = (try? String(contentsOfFile: sharedir + "/postgresql.conf.sample", encoding: .utf8)) ?? ""
        knowsOutputPluginLibraries = sample.contains("output_plugin_libraries")
    }

    /// The installation whose bin directory holds `postgres`.
    public init(bindir: String) throws {
        try self.init(pgConfig: bindir + "/pg_config")
    }

    public var description: String { "PostgreSQL \(version)" }

    /// True when `make install PG_CONFIG=<this>` has installed the plugin.
    public var hasMMLitePlugin: Bool {
        FileManager.default.fileExists(atPath: pkglibdir + "/mmlite.so")
    }

    public func binary(_ name: String) -> String { bindir + "/" + name }
}

/// A failure of a server program or of the local machine (a port, a file).
public struct ClusterError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
