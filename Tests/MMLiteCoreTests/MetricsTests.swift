import Foundation
import MMLiteCore
import Testing

@Suite("Prometheus exposition")
struct MetricsTests {
    func link(_ publisher: String, _ subscriber: String, publisherUp: Bool = true, subscriberUp: Bool = true) -> LinkStatus {
        var link = LinkStatus(publisher: publisher, subscriber: subscriber, subscription: "mmlite_shop_from_\(publisher)",
                              slot: "mmlite_shop_\(subscriber)", publisherReachable: publisherUp, subscriberReachable: subscriberUp)
        guard publisherUp && subscriberUp else { return link }
        link.subscriptionExists = true
        link.subscriptionEnabled = true
        link.workerPID = 42
        link.slotExists = true
        link.slotActive = true
        link.publisherLSN = LSN("0/3000400")
        link.confirmedFlushLSN = LSN("0/3000000")
        link.restartLSN = LSN("0/2000000")
        link.replayLagSeconds = 1.5
        link.applyErrorCount = 2
        return link
    }

    func assessed(_ link: LinkStatus, stuck: StuckLink? = nil) -> LinkAssessment {
        link.assess(Thresholds(), retainedWarningBytes: 1 << 30, stuck: stuck)
    }

    func snapshot() -> MetricsSnapshot {
        var n1 = MetricsSnapshot.Node(name: "n1", up: true)
        n1.serverVersion = "15.20"
        n1.serverVersionNumber = 150020
        n1.currentLSN = LSN("0/3000400")
        n1.conflictLogRows = 3
        n1.conflictLogBytes = 16384
        n1.conflicts = [.init(table: "public.accounts", kind: "update_update", rows: 2), .init(table: "public.\"we\"\"ird\\\"", kind: "insert_insert", rows: 1)]
        n1.sequenceOffset = 1
        let n2 = MetricsSnapshot.Node(name: "n2", up: false)
        return MetricsSnapshot(mesh: "shop", nodes: [n1, n2],
                               links: [assessed(link("n1", "n2", subscriberUp: false)), assessed(link("n2", "n1", publisherUp: false))])
    }

    @Test("label values escape backslash, double quote and line feed; HELP escapes backslash and line feed")
    func escaping() {
        #expect(Exposition.escapeLabelValue(#"a\b"c"# + "\nd") == #"a\\b\"c\nd"#)
        #expect(Exposition.escapeHelp("x\\y\nz \"q\"") == #"x\\y\nz "q""#)
    }

    @Test("values: integers plain, fractions, NaN and infinities as Prometheus spells them")
    func values() {
        #expect(Exposition.format(3) == "3")
        #expect(Exposition.format(-1) == "-1")
        #expect(Exposition.format(1.5) == "1.5")
        #expect(Exposition.format(.nan) == "NaN")
        #expect(Exposition.format(.infinity) == "+Inf")
        #expect(Exposition.format(-.infinity) == "-Inf")
        #expect(Exposition.format(Double(UInt64(1) << 62)) == "4611686018427387904.0" || Exposition.format(Double(UInt64(1) << 62)).contains("e"))
    }

    @Test("each family once: HELP, TYPE, then its samples; empty families left out")
    func render() {
        let text = Exposition.render([
            MetricFamily("a_total", .counter, "A\nthing.", samples: [.init([.init("x", "1")], 2)]),
            MetricFamily("b", .gauge, "Empty."),
            MetricFamily("c", .gauge, "No labels.", samples: [.init([], 0.25)]),
        ])
        #expect(text == """
            # HELP a_total A\\nthing.
            # TYPE a_total counter
            a_total{x="1"} 2
            # HELP c No labels.
            # TYPE c gauge
            c 0.25

            """)
    }

    @Test("node up and down, server version, conflicts by table and kind, sequence offset")
    func nodes() {
        let text = snapshot().exposition
        #expect(text.contains(#"mmlite_node_up{mesh="shop",node="n1"} 1"#))
        #expect(text.contains(#"mmlite_node_up{mesh="shop",node="n2"} 0"#))
        #expect(text.contains(#"mmlite_node_server_info{mesh="shop",node="n1",server_version="15.20"} 1"#))
        #expect(!text.contains(#"mmlite_node_server_info{mesh="shop",node="n2""#))
        #expect(text.contains(#"mmlite_node_server_version_number{mesh="shop",node="n1"} 150020"#))
        #expect(text.contains(#"mmlite_node_wal_lsn_bytes{mesh="shop",node="n1"} 50332672"#))
        #expect(text.contains(#"mmlite_conflict_log_entries{mesh="shop",node="n1",table="public.accounts",kind="update_update"} 2"#))
        #expect(text.contains(#"mmlite_conflict_log_entries{mesh="shop",node="n1",table="public.\"we\"\"ird\\\"",kind="insert_insert"} 1"#))
        #expect(text.contains(#"mmlite_conflict_log_bytes{mesh="shop",node="n1"} 16384"#))
        #expect(text.contains(#"mmlite_sequence_offset{mesh="shop",node="n1"} 1"#))
        #expect(!text.contains(#"mmlite_sequence_offset{mesh="shop",node="n2"}"#))
    }

    @Test("links to and from a node that is down are down and critical, without lag series")
    func linksToADownNode() {
        let text = snapshot().exposition
        for (publisher, subscriber) in [("n1", "n2"), ("n2", "n1")] {
            let labels = #"mesh="shop",publisher="\#(publisher)",subscriber="\#(subscriber)""#
            #expect(text.contains("mmlite_link_up{\(labels)} 0"))
            #expect(text.contains("mmlite_link_state{\(labels),state=\"critical\"} 1"))
            #expect(text.contains("mmlite_link_state{\(labels),state=\"ok\"} 0"))
            #expect(!text.contains("mmlite_link_lag_bytes{\(labels)}"))
        }
    }

    @Test("a running link: up, lag in bytes and seconds, retained WAL, apply errors as a counter; stuck is down")
    func runningLink() {
        let running = MetricsSnapshot(mesh: "shop", nodes: [], links: [assessed(link("n1", "n2"))])
        let text = running.exposition
        let labels = #"mesh="shop",publisher="n1",subscriber="n2""#
        #expect(text.contains("mmlite_link_up{\(labels)} 1"))
        #expect(text.contains("mmlite_link_lag_bytes{\(labels)} 1024"))
        #expect(text.contains("mmlite_link_lag_seconds{\(labels)} 1.5"))
        #expect(text.contains("mmlite_link_retained_wal_bytes{\(labels)} 16778240"))
        #expect(text.contains("# TYPE mmlite_link_apply_errors_total counter\nmmlite_link_apply_errors_total{\(labels)} 2"))
        #expect(text.contains("mmlite_link_stuck{\(labels)} 0"))

        var failing = link("n1", "n2")
        failing.workerPID = nil
        let stuck = StuckLink(publisher: "n1", subscriber: "n2", applyErrors: 2, evidence: .retrying(appliedUpTo: nil))
        let stuckText = MetricsSnapshot(mesh: "shop", nodes: [], links: [assessed(failing, stuck: stuck)]).exposition
        #expect(stuckText.contains("mmlite_link_stuck{\(labels)} 1"))
        #expect(stuckText.contains("mmlite_link_up{\(labels)} 0"))
    }

    @Test("every series name and label name is valid, with the mmlite_ prefix and Prometheus's unit suffixes")
    func names() {
        var snapshot = snapshot()
        snapshot.links.append(assessed(link("n1", "n3")))
        snapshot.scrapeSeconds = 0.1
        for family in snapshot.families {
            #expect(Exposition.isValidName(family.name), "\(family.name)")
            #expect(family.name.hasPrefix("mmlite_"))
            #expect((family.type == .counter) == family.name.hasSuffix("_total"), "\(family.name)")
            for sample in family.samples { for label in sample.labels { #expect(Exposition.isValidName(label.name, label: true)) } }
        }
        #expect(!Exposition.isValidName("9lives"))
        #expect(!Exposition.isValidName("a:b", label: true))
        #expect(!Exposition.isValidName(""))
    }

    @Test("--listen: host:port, [v6]:port, :port; anything else refused")
    func listen() {
        #expect(ListenAddress("127.0.0.1:9187") == ListenAddress(host: "127.0.0.1", port: 9187))
        #expect(ListenAddress("[::1]:9187") == ListenAddress(host: "::1", port: 9187))
        #expect(ListenAddress("[::1]:9187")?.description == "[::1]:9187")
        #expect(ListenAddress(":9187") == ListenAddress(host: "0.0.0.0", port: 9187))
        #expect(ListenAddress("localhost:0") == ListenAddress(host: "localhost", port: 0))
        for bad in ["9187", "127.0.0.1", "127.0.0.1:99999", "::1:9187", "[::1]9187", "[127.0.0.1]:1", "host:port"] {
            #expect(ListenAddress(bad) == nil, "\(bad)")
        }
    }

    @Test("HTTP request line: method and path without the query; anything else refused; end of head")
    func requestHead() {
        #expect(HTTPRequestHead("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == HTTPRequestHead("GET /metrics?x=1 HTTP/1.0\r\n\r\n"))
        #expect(HTTPRequestHead("GET /metrics HTTP/1.1\r\n\r\n")?.path == "/metrics")
        #expect(HTTPRequestHead("HEAD / HTTP/1.1\r\n\r\n")?.method == "HEAD")
        for bad in ["", "GET\r\n\r\n", "GET metrics HTTP/1.1\r\n", "get /metrics HTTP/1.1\r\n", "GET /metrics HTTP/2\r\n", "GET  /metrics HTTP/1.1\r\n"] {
            #expect(HTTPRequestHead(bad) == nil, "\(bad)")
        }
        #expect(HTTPRequestHead.endOfHead(in: Array("GET / HTTP/1.1\r\nA: b\r\n\r\nbody".utf8)) == 24)
        #expect(HTTPRequestHead.endOfHead(in: Array("GET / HTTP/1.1\r\nA: b\r\n".utf8)) == nil)
    }

    @Test("docs/monitoring.md documents every series; the dashboard and the alert rules use only series that exist")
    func documented() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let names = Set(MetricsSnapshot(mesh: "m", nodes: [], links: []).families.map(\.name))
        #expect(names.count >= 20)
        func mentioned(_ path: String) throws -> Set<String> {
            let text = try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
            let regex = try NSRegularExpression(pattern: "mmlite_[a-z_]+[a-z]")
            return Set(regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { Range($0.range, in: text).map { String(text[$0]) } })
        }
        let documented = try mentioned("docs/monitoring.md")
        #expect(names.subtracting(documented).isEmpty, "not in docs/monitoring.md: \(names.subtracting(documented).sorted())")
        for file in ["docs/monitoring/grafana-dashboard.json", "docs/monitoring/mmlite-alerts.yml"] {
            let used = try mentioned(file)
            #expect(!used.isEmpty, "\(file) uses no series")
            #expect(used.subtracting(names).isEmpty, "\(file) uses series that do not exist: \(used.subtracting(names).sorted())")
        }
    }
}
