import ArgumentParser
import Foundation
import MMLiteCore

/// Runs `mmlite` with `arguments` (without the program name); returns the exit code.
public func runMMLite(_ arguments: [String], context: Context) -> Int32 {
    do {
        var command = try MMLite.parseAsRoot(arguments)
        if let runnable = command as? MMLiteRunnable {
            return try runnable.execute(context).rawValue
        }
        try command.run()
        return 0
    } catch let error as CLIError {
        context.console.error("mmlite: " + error.message)
        return error.status.rawValue
    } catch {
        let code = MMLite.exitCode(for: error).rawValue
        let message = MMLite.fullMessage(for: error)
        if code == 0 {
            context.console.print(message)
        } else {
            context.console.error(message)
        }
        return code
    }
}

protocol MMLiteRunnable {
    func execute(_ context: Context) throws -> ExitStatus
}

struct MMLite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmlite",
        abstract: "Multi-master logical replication for stock PostgreSQL.",
        discussion: """
        One configuration file (default mmlite.toml) lists the mesh's nodes and tables. Start with `mmlite sandbox up` for a local 3-node demo, or write the file and run `mmlite doctor`, then `mmlite apply`, then `mmlite status`. See docs/cli.md.
        """,
        version: MMLiteCore.version,
        subcommands: [DoctorCommand.self, ApplyCommand.self, StatusCommand.self, MetricsCommand.self, ExporterCommand.self, DiffCommand.self, RepairCommand.self, ConflictsCommand.self, ResolveCommand.self,
                      JoinCommand.self, PartCommand.self, DDLCommand.self, SandboxCommand.self]
    )
}

struct GlobalOptions: ParsableArguments {
    @Option(name: [.short, .long], help: ArgumentHelp("The mesh's configuration file.", valueName: "file"))
    var config: String = "mmlite.toml"

    @Flag(name: [.short, .long], help: "Print every statement and connection on stderr.")
    var verbose = false

    func prepare(_ context: Context) {
        context.console.verbose = verbose
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

struct DoctorCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check every node and link, and say how to fix what is wrong.",
        discussion: """
        Checks per node: reachable, version, wal_level, slot/sender/worker limits for this mesh, the mmlite plugin (or native origin = none on 16+), tables (present everywhere, same columns, primary key), sequences that would collide, track_commit_timestamp, privileges, and whether each node's server reaches every peer with its peer_dsn.

        Exit code: 0 all passed, 1 warnings only, 2 a check failed, 69 a node is unreachable counts as a failure (2), 78 the configuration file is invalid.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "table or json.") var format: OutputFormat = .table
    @Flag(help: "Do not hash tables about to be wired to compare their contents (they must still be empty everywhere or hold rows everywhere).") var skipHashCheck = false

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        return try Doctor(configPath: global.config, format: format, context: context, skipHashCheck: skipHashCheck).run()
    }
}

struct ApplyCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Create what is missing so the nodes form a full mesh over the configured tables.",
        discussion: """
        Creates the publication on every node, a slot on every publisher for every subscriber, and the subscriptions (without initial copy), in that order; adds tables added to the config. Idempotent: a second run finds nothing to do. Runs the blocking checks of `doctor` first and changes nothing if one fails.

        Exit code: 0 done (or nothing to do), 1 a statement failed before anything changed, 2 a check failed (nothing changed), 69 a node is unreachable (nothing changed), 75 stopped part-way (re-run to finish), 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print the exact SQL per node and change nothing.") var dryRun = false
    @Flag(help: "Do not hash tables about to be wired to compare their contents (they must still be empty everywhere or hold rows everywhere).") var skipHashCheck = false

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        return try Apply(configPath: global.config, dryRun: dryRun, context: context, skipHashCheck: skipHashCheck).run()
    }
}

struct StatusCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show every node and every directed link: workers, slots, lag, errors.",
        discussion: """
        --check turns the result into Nagios-style exit codes: 0 OK, 1 WARNING (lag over the warning thresholds, a slot not active yet), 2 CRITICAL (node unreachable, link missing, disabled or not running, lag over the critical thresholds), 3 UNKNOWN (configuration unreadable).
        """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: "table or json.") var format: OutputFormat = .table
    @Flag(help: "Exit with a Nagios-style code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).") var check = false
    @Option(help: ArgumentHelp("Lag (bytes) from which a link is a warning.", valueName: "bytes")) var warningLagBytes: UInt64 = 16 * 1024 * 1024
    @Option(help: ArgumentHelp("Lag (bytes) from which a link is critical.", valueName: "bytes")) var criticalLagBytes: UInt64 = 1024 * 1024 * 1024
    @Option(help: ArgumentHelp("Lag (seconds) from which a link is a warning.", valueName: "seconds")) var warningLagSeconds: Double = 60
    @Option(help: ArgumentHelp("Lag (seconds) from which a link is critical.", valueName: "seconds")) var criticalLagSeconds: Double = 600
    @Option(help: ArgumentHelp("WAL a slot retains from which a link is a warning.", valueName: "bytes")) var warningRetainedBytes: UInt64 = 1024 * 1024 * 1024

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        let thresholds = Thresholds(warningBytes: warningLagBytes, criticalBytes: criticalLagBytes,
                                    warningSeconds: warningLagSeconds, criticalSeconds: criticalLagSeconds)
        do {
            return try Status(configPath: global.config, format: format, check: check, thresholds: thresholds, context: context, retainedWarningBytes: warningRetainedBytes).run()
        } catch let error as CLIError where check {
            context.console.error("mmlite: " + error.message)
            return .unknown
        }
    }
}

struct ConflictsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conflicts",
        abstract: "Read and prune the conflict log (mmlite.conflicts) of every node.",
        discussion: "`mmlite conflicts` alone is `mmlite conflicts list`. See docs/conflicts.md.",
        subcommands: [ConflictsListCommand.self, ConflictsPruneCommand.self],
        defaultSubcommand: ConflictsListCommand.self
    )
}

struct ConflictsListCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Show every reachable node's conflict log, merged by time.",
        discussion: """
        Unreachable nodes are reported on stderr and left out.

        Exit code: 0 shown, 64 bad --since or --table, 69 no node reachable, 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("Only entries since a time: an interval back from now (\"2 hours\") or a timestamp.", valueName: "interval|timestamp"))
    var since: String?
    @Option(help: ArgumentHelp("Only entries of this table.", valueName: "schema.table")) var table: String?
    @Option(help: "table or json.") var format: OutputFormat = .table

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        return try ConflictsList(configPath: global.config, since: since, table: table, format: format, context: context).run()
    }
}

struct ConflictsPruneCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove old conflict-log rows, sent change rows and old tombstones on every node.",
        discussion: """
        Keeps conflict-log rows for [mesh] conflict_log_retention (default 30 days) and tombstones of opted-in tables for [mesh] tombstone_retention (default 7 days). Run it from cron on one machine.

        Exit code: 0 done, 69 no node reachable, 75 some nodes not pruned, 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print the SQL per node and change nothing.") var dryRun = false

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        return try ConflictsPrune(configPath: global.config, dryRun: dryRun, context: context).run()
    }
}

struct ResolveCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "resolve",
        abstract: "Restart a link that is stuck on an apply error, by skipping the failing transaction.",
        discussion: """
        For each subscription of NODE that keeps failing (PostgreSQL 15+): disables it, reads the failing transaction from the publisher's slot, records each of its changes in NODE's mmlite.conflicts (kind apply_error_skipped) together with ALTER SUBSCRIPTION ... SKIP, and enables it again. The skipped changes are lost on NODE: repair from the log if needed.

        Exit code: 0 done (or nothing to do), 2 --from names a link that is not failing or a step failed (nothing skipped), 64 usage, 69 unreachable, 75 stopped part-way, 78 PostgreSQL < 15.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The node whose incoming link is stuck (the subscriber).") var node: String
    @Flag(help: "Skip the failing transaction (the only resolution so far).") var skip = false
    @Option(help: ArgumentHelp("Only the link from this publisher.", valueName: "peer")) var from: String?
    @Flag(help: "Show what would be skipped and change nothing.") var dryRun = false
    @Option(help: ArgumentHelp("Seconds to watch for a new apply error and to wait for workers.", valueName: "seconds"))
    var timeout: Double = 30

    func validate() throws {
        guard skip else { throw ValidationError("say how to resolve: --skip (skip the failing transaction)") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        return try Resolve(configPath: global.config, node: node, from: from, dryRun: dryRun, timeout: timeout, context: context).run()
    }
}

struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "A throwaway local mesh to try mmlite with.",
        subcommands: [SandboxUp.self, SandboxDown.self]
    )
}

struct SandboxUp: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start N local PostgreSQL clusters, create a small schema, write mmlite.toml and apply it.",
        discussion: "The clusters keep running after mmlite exits; `mmlite sandbox down` removes them."
    )
    @Option(help: "How many nodes (2 to 9).") var nodes: Int = 3
    @Option(help: ArgumentHelp("pg_config of the PostgreSQL to run (default: pg_config on PATH, else /usr/lib/postgresql/15/bin/pg_config).", valueName: "path"))
    var pgConfig: String?
    @Option(help: ArgumentHelp("Where the clusters, their logs and mmlite.toml go.", valueName: "dir")) var dir: String = Sandbox.defaultDirectory
    @Flag(name: [.short, .long], help: "Print every statement on stderr.") var verbose = false

    func validate() throws {
        guard (2...9).contains(nodes) else { throw ValidationError("--nodes must be between 2 and 9") }
    }

    func execute(_ context: Context) throws -> ExitStatus {
        context.console.verbose = verbose
        return try Sandbox(directory: dir, context: context).up(nodes: nodes, pgConfig: pgConfig)
    }
}

struct SandboxDown: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "down",
        abstract: "Stop the sandbox's clusters and delete their files."
    )
    @Option(help: ArgumentHelp("The sandbox directory.", valueName: "dir")) var dir: String = Sandbox.defaultDirectory

    func execute(_ context: Context) throws -> ExitStatus {
        try Sandbox(directory: dir, context: context).down()
    }
}
