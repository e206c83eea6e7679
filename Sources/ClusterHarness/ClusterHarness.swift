import Foundation
@_exported import LocalCluster
import PostgresClient

// ClusterHarness: throwaway clusters for the tests and the benchmarks, on top
// of LocalCluster (PGInstallation, Cluster, ChildProcess, ClusterDirectory,
// re-exported here so `import ClusterHarness` is all a test needs).

/// ClusterHarness's errors are LocalCluster's.
public typealias HarnessError = ClusterError

/// Starts throwaway clusters and removes them again: when `destroyAll()` is
/// called, when the harness is deallocated, and — for a process that died
/// before either — by the next harness that starts on this machine.
public final class ClusterHarness {
    /// Settings every cluster gets: ClusterDirectory.meshSettings(for:).
    public static func defaultSettings(for installation: PGInstallation) -> [String: String] {
        ClusterDirectory.meshSettings(for: installation)
    }

    private let local: ClusterDirectory
    public var directory: String { local.directory }
    public var clusters: [Cluster] { local.clusters }
    /// Keep clusters running after this object goes away.
    public let persistent: Bool

    /// - Parameter directory: where clusters live. Default: a new folder under /tmp
    ///   (short: Unix socket paths are limited to ~100 bytes; and reachable by the
    ///   `postgres` user when running as root).
    public init(directory: String? = nil, persistent: Bool = false) throws {
        Self.reapAbandoned()
        self.persistent = persistent
        local = try ClusterDirectory(directory: directory ?? "/tmp/mmlite-h-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))")
        if !persistent {
            try "\(getpid())\n".write(toFile: local.directory + "/owner.pid", atomically: true, encoding: .utf8)
        }
    }

    deinit {
        if !persistent { destroyAll() }
    }

    /// Creates and starts a cluster. `settings` are added to (and override)
    /// `defaultSettings(for:)`; a value is written verbatim into postgresql.conf.
    @discardableResult
    public func startCluster(name: String, installation: PGInstallation,
                             settings: [String: String] = [:],
                             authentication: Cluster.Authentication = .trust) throws -> Cluster {
        try local.startCluster(name: name, installation: installation, settings: settings, authentication: authentication)
    }

    /// Starts `count` clusters named n1, n2, ... of one installation.
    public func startClusters(_ count: Int, installation: PGInstallation,
                              settings: [String: String] = [:],
                              authentication: Cluster.Authentication = .trust) throws -> [Cluster] {
        try (1...count).map { try startCluster(name: "n\($0)", installation: installation, settings: settings, authentication: authentication) }
    }

    public func destroyAll() {
        local.destroyAll()
    }

    /// Stops and deletes clusters left by harness processes that no longer run
    /// (a crashed or killed test run), and their installation copies
    /// (`PGInstallation.withoutMMLite()`).
    public static func reapAbandoned() {
        let fileManager = FileManager.default
        guard let entries = try? fileManager.contentsOfDirectory(atPath: "/tmp") else { return }
        for entry in entries where entry.hasPrefix(InstallationCopies.prefix) {
            let directory = "/tmp/" + entry
            guard let text = try? String(contentsOfFile: directory + "/owner.pid", encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            try? fileManager.removeItem(atPath: directory)
        }
        for entry in entries where entry.hasPrefix("mmlite-h-") {
            let directory = "/tmp/" + entry
            guard let text = try? String(contentsOfFile: directory + "/owner.pid", encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            for child in (try? fileManager.contentsOfDirectory(atPath: directory)) ?? [] {
                let pidFile = directory + "/" + child + "/postmaster.pid"
                guard let postmaster = try? String(contentsOfFile: pidFile, encoding: .utf8),
                      let first = postmaster.split(separator: "\n").first, let serverPID = Int32(first)
                else { continue }
                kill(serverPID, SIGQUIT)  // immediate shutdown
            }
            usleep(300_000)
            try? fileManager.removeItem(atPath: directory)
        }
    }
}

/// Polls `condition` until it is true or `timeout` seconds pass; returns
/// whether it became true. Errors thrown by `condition` count as "not yet".
@discardableResult
public func waitUntil(timeout: Double = 30, interval: Double = 0.1, _ condition: () throws -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    repeat {
        if (try? condition()) == true { return true }
        usleep(UInt32(interval * 1_000_000))
    } while Date() < deadline
    return (try? condition()) == true
}

extension PGInstallation {
    /// Installations to test against: `MMLITE_PG_CONFIGS` (pg_config paths
    /// separated by ':' or ','), else Debian's PostgreSQL 15, else `pg_config`
    /// found on PATH.
    public static func fromEnvironment() throws -> [PGInstallation] {
        let environment = ProcessInfo.processInfo.environment
        if let list = environment["MMLITE_PG_CONFIGS"], !list.isEmpty {
            return try list.split(whereSeparator: { $0 == ":" || $0 == "," })
                .map { try PGInstallation(pgConfig: String($0).trimmingCharacters(in: .whitespaces)) }
        }
        return [try systemDefault()]
    }

    /// Debian's PostgreSQL 15 if present, else `pg_config` on PATH.
    public static func systemDefault() throws -> PGInstallation {
        let debian = "/usr/lib/postgresql/15/bin/pg_config"
        if FileManager.default.isExecutableFile(atPath: debian) { return try PGInstallation(pgConfig: debian) }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = String(directory) + "/pg_config"
            if FileManager.default.isExecutableFile(atPath: candidate) { return try PGInstallation(pgConfig: candidate) }
        }
        throw HarnessError("no PostgreSQL found: install postgresql-15 (apt-get install postgresql-15 postgresql-server-dev-15) or set MMLITE_PG_CONFIGS=/path/to/pg_config")
    }
}

extension PGInstallation {
    /// This installation without mmlite: a copy of its whole tree with
    /// `mmlite.so` and the extension's control and SQL files removed, like a
    /// server where nobody may install a library (a managed service). Made
    /// once per installation and process (hard links, so it takes a moment),
    /// world-readable under /tmp, removed when the process exits (or, after a
    /// crash, by the next harness). Only self-contained installations (the PyPI
    /// builds of 16, 17, 18) can be copied: Debian's throws.
    public func withoutMMLite() throws -> PGInstallation {
        try InstallationCopies.shared.withoutMMLite(self)
    }
}

/// The copies `withoutMMLite()` made in this process: /tmp/mmlite-i-PID/…
final class InstallationCopies: @unchecked Sendable {
    static let prefix = "mmlite-i-"
    static let shared = InstallationCopies()

    private let lock = NSLock()
    private var copies: [String: PGInstallation] = [:]
    private let directory = "/tmp/\(InstallationCopies.prefix)\(getpid())"

    func withoutMMLite(_ original: PGInstallation) throws -> PGInstallation {
        lock.lock(); defer { lock.unlock() }
        if let copy = copies[original.pgConfig] { return copy }
        let fileManager = FileManager.default
        if copies.isEmpty {
            ClusterHarness.reapAbandoned()
            try? fileManager.removeItem(atPath: directory)   // a process before us with our pid
            try fileManager.createDirectory(atPath: directory, withIntermediateDirectories: false,
                                            attributes: [.posixPermissions: 0o755])
            try "\(getpid())\n".write(toFile: directory + "/owner.pid", atomically: true, encoding: .utf8)
            atexit { InstallationCopies.removeAll() }
        }
        let destination = directory + "/pg\(original.major)-\(copies.count + 1)"
        let copy = try original.copy(to: destination) { name in
            name == "mmlite.so" || name == "mmlite.control" || (name.hasPrefix("mmlite--") && name.hasSuffix(".sql"))
                || name == "mmlite" || name == "mmlite.index.bc"   // bitcode, when built with LLVM
        }
        guard !copy.hasMMLitePlugin else { throw HarnessError("\(destination) still has mmlite.so") }
        copies[original.pgConfig] = copy
        return copy
    }

    /// Removes every copy (at exit).
    static func removeAll() {
        try? FileManager.default.removeItem(atPath: shared.directory)
    }
}

extension Cluster {
    /// Log lines at ERROR, FATAL or PANIC, and crashes of any server process.
    public func logErrors() -> [String] {
        serverLog().split(separator: "\n").map(String.init).filter { line in
            line.contains(" ERROR: ") || line.contains(" FATAL: ") || line.contains(" PANIC: ")
                || line.contains("terminated by signal") || line.contains("was terminated by")
        }
    }

    /// A content fingerprint of a table: row count and an md5 over every row's
    /// text form in a fixed order. Equal fingerprints mean equal content.
    public func fingerprint(of table: String) throws -> String {
        try scalar("SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '-') FROM \(table) t") ?? ""
    }
}
