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

    /// The directory holding the whole installation: the parent of `bindir`.
    public var root: String { (bindir as NSString).deletingLastPathComponent }

    /// Whether the tree under `root` is all there is (pkglibdir and sharedir
    /// inside it), so a copy of it is a working installation whose pg_config
    /// answers with the copy's paths (PyPI wheels are built like that; Debian's
    /// packages are not: their sharedir is under /usr/share).
    public var isSelfContained: Bool {
        [pkglibdir, sharedir].allSatisfy { $0.hasPrefix(root + "/") }
    }

    /// Copies the whole installation (`root`) to `destination` (which must not
    /// exist; its parent must) and removes from the copy every file whose name
    /// `remove` accepts in pkglibdir (and its `bitcode`) and in
    /// `sharedir/extension`. The copy is made of hard links where the file
    /// system allows (`cp -al`: fast, and removing a link in the copy leaves
    /// the original alone), else of copies (`cp -a`). Throws when the
    /// installation is not self-contained or the copy's pg_config does not
    /// answer with the copy's paths.
    public func copy(to destination: String, removing remove: (String) -> Bool) throws -> PGInstallation {
        guard isSelfContained else {
            throw ClusterError("\(self) at \(root) cannot be copied: pkglibdir \(pkglibdir) or sharedir \(sharedir) is outside it")
        }
        guard !FileManager.default.fileExists(atPath: destination) else { throw ClusterError("\(destination) exists already") }
        do {
            try runCommand(["/bin/cp", "-al", root, destination])
        } catch {
            try? FileManager.default.removeItem(atPath: destination)
            try runCommand(["/bin/cp", "-a", root, destination])
        }
        let copied = try PGInstallation(pgConfig: destination + "/" + String(bindir.dropFirst(root.count + 1)) + "/pg_config")
        guard copied.bindir.hasPrefix(destination + "/"), copied.pkglibdir.hasPrefix(destination + "/"),
              copied.sharedir.hasPrefix(destination + "/") else {
            try? FileManager.default.removeItem(atPath: destination)
            throw ClusterError("the copy of \(self) at \(destination) is not relocated: pg_config says bindir \(copied.bindir), pkglibdir \(copied.pkglibdir), sharedir \(copied.sharedir)")
        }
        for directory in [copied.pkglibdir, copied.pkglibdir + "/bitcode", copied.sharedir + "/extension"] {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where remove(entry) {
                try FileManager.default.removeItem(atPath: directory + "/" + entry)
            }
        }
        return copied
    }
}

/// A failure of a server program or of the local machine (a port, a file).
public struct ClusterError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
