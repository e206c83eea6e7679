import ArgumentParser
import MMLiteCore

struct MetricsCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "metrics",
        abstract: "Print every node's and link's health once, in Prometheus's text format.",
        discussion: """
        The same observation as `mmlite status`, read-only, as the series that `mmlite exporter` serves on /metrics (listed in docs/monitoring.md): node up, server version, per-link state, lag in bytes and seconds, retained WAL, apply errors, stuck links, conflict-log entries by table and kind, conflict-log, change-table and version-table sizes, sequence offsets. Every node is observed in parallel; a node that does not answer within --timeout seconds has mmlite_node_up 0 and the others' series are unaffected.

        Exit code: 0 printed (also with nodes down: that is in the series), 64 usage, 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("Seconds each node may take to connect and answer.", valueName: "seconds")) var timeout: Double = 5

    func validate() throws {
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        return try MetricsOnce(collector: MetricsCollector(configPath: global.config, timeout: timeout, console: context.console)).run()
    }
}

struct ExporterCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "exporter",
        abstract: "Serve the mesh's metrics to Prometheus on /metrics.",
        discussion: """
        Each scrape of GET /metrics re-reads the configuration file and observes every node as `mmlite metrics` does: read-only, in parallel, each node within --timeout seconds, so one failing node never blocks the others' series. Keep --timeout below Prometheus's scrape_timeout (10 s by default). Nothing is cached between scrapes; no password is ever shown (DSNs are not part of any series).

        Runs until stopped (SIGTERM or Ctrl-C). See docs/monitoring.md for the series, a scrape configuration, alert rules and a Grafana dashboard.

        Exit code: 64 usage, 69 the address cannot be listened on, 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("Address and port to listen on: 127.0.0.1:9187, [::1]:9187, :9187 (every IPv4 address).", valueName: "host:port"))
    var listen: String = "127.0.0.1:9187"
    @Option(help: ArgumentHelp("Seconds each node may take to connect and answer, per scrape.", valueName: "seconds")) var timeout: Double = 5

    func validate() throws {
        guard ListenAddress(listen) != nil else { throw ValidationError("--listen must be HOST:PORT, e.g. 127.0.0.1:9187 or [::1]:9187") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        // A configuration that cannot be read is an error at start, not at the first scrape.
        _ = try loadConfig(global.config, console: context.console)
        let collector = MetricsCollector(configPath: global.config, timeout: timeout, console: context.console)
        return try MetricsExporter.serve(collector: collector, address: ListenAddress(listen)!)
    }
}
