import Foundation

/// A program started with posix_spawn, its stdout and stderr going to files.
///
/// Not Foundation's Process: Process notices a child's exit through a
/// descriptor the child inherits, and a child that starts a server (`pg_ctl
/// start`, `mmlite sandbox up`) leaves that server holding it, so Process
/// never returns. Used by LocalCluster, the test harness, the tests and the benchmarks.
public final class ChildProcess: @unchecked Sendable {
    public let arguments: [String]
    public let pid: pid_t
    public let outputPath: String
    /// nil: stderr goes to `outputPath` too.
    public let errorPath: String?
    private var exitCode: Int32?
    private let lock = NSLock()

    /// `environment` entries are added to (or replace) this process's.
    /// A relative program name is looked up on PATH.
    public init(_ arguments: [String], outputPath: String, errorPath: String? = nil, environment: [String: String] = [:]) throws {
        guard !arguments.isEmpty else { throw ClusterError("empty command") }
        self.arguments = arguments
        self.outputPath = outputPath
        self.errorPath = errorPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if let errorPath {
            posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        let command = arguments[0].hasPrefix("/") ? arguments : ["/usr/bin/env"] + arguments
        let argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        // A clean signal state: the test runner blocks signals (SIGALRM among
        // them, which pgbench -T relies on) and a child would inherit that.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t(), ignoredByUs = sigset_t()
        sigemptyset(&empty)
        sigemptyset(&ignoredByUs)
        for signal in [SIGPIPE, SIGALRM, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&ignoredByUs, signal) }
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &ignoredByUs)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, &attributes, argv, envp)
        guard spawned == 0 else {
            throw ClusterError("could not run \(arguments[0]): \(String(cString: strerror(spawned)))")
        }
        self.pid = pid
    }

    /// The exit code once the process has ended (nil while it runs), without blocking.
    public func poll() -> Int32? {
        lock.lock(); defer { lock.unlock() }
        if let exitCode { return exitCode }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { exitCode = Self.decode(status) }
        return exitCode
    }

    /// Waits for the end; the exit code (128 + signal when killed by one).
    @discardableResult
    public func wait() -> Int32 {
        lock.lock(); defer { lock.unlock() }
        if let exitCode { return exitCode }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        exitCode = Self.decode(status)
        return exitCode ?? -1
    }

    /// Sends `signal` (default SIGKILL: no chance to clean up) and waits for the end.
    @discardableResult
    public func kill(_ signal: Int32 = SIGKILL) -> Int32 {
        if poll() == nil { _ = Glibc.kill(pid, signal) }
        return wait()
    }

    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    public var errorOutput: String { errorPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? "" }

    private static func decode(_ status: Int32) -> Int32 {
        (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
