import ClusterHarness
import Foundation
import LocalCluster
import MMLiteCLI
import MMLiteCore
import Testing

/// Debian's Prometheus (package `prometheus`, installed by scripts/setup).
let prometheusBinary = "/usr/bin/prometheus"
let promtoolBinary = "/usr/bin/promtool"
/// In CI a missing Prometheus is a failure, elsewhere the suite is skipped.
let prometheusRequired = ProcessInfo.processInfo.environment["CI"] != nil

@Suite("Monitoring: mmlite metrics and a real Prometheus scraping mmlite exporter", .serialized,
       .enabled(if: installation != nil && (prometheusRequired || FileManager.default.isExecutableFile(atPath: prometheusBinary))))
struct MonitoringTests {
    @Test("promtool accepts `mmlite metrics`; Prometheus scrapes every node and link; a stopped node goes down alone")
    func prometheusScrapesTheExporter() throws {
        #expect(FileManager.default.isExecutableFile(atPath: prometheusBinary), "\(prometheusBinary) missing: apt-get install prometheus (scripts/setup)")
        let mesh = try TestMesh(3)
        try mesh.writeConfig()
        let apply = mesh.mmlite(["apply"])
        try #require(apply.code == 0, "\(apply)")
        try mesh.expectReplicates(base: 1000)

        // The exposition once: promtool's linter accepts it, and it names every node and link.
        let once = mesh.mmlite(["metrics"])
        #expect(once.code == 0, "\(once)")
        let file = mesh.harness.directory + "/metrics.txt"
        try once.out.write(toFile: file, atomically: true, encoding: .utf8)
        let (lint, lintOutput) = try spawnAndWait(["/bin/sh", "-c", "\(promtoolBinary) check metrics < '\(file)'"])
        #expect(lint == 0, "promtool check metrics: \(lintOutput)\n\(once.out)")
        for node in ["n1", "n2", "n3"] { #expect(once.out.contains("mmlite_node_up{mesh=\"shop\",node=\"\(node)\"} 1"), "\(once.out)") }
        #expect(!once.out.contains("password"))

        // The exporter in this process, Prometheus scraping it every second.
        let exporter = try MetricsExporter(collector: MetricsCollector(configPath: mesh.configPath, timeout: 1.5, console: OutputBuffer().console()),
                                           address: ListenAddress(host: "127.0.0.1", port: 0))
        exporter.start()
        defer { exporter.stop() }
        let prometheus = try Prometheus(directory: mesh.harness.directory + "/prometheus", target: exporter.address)
        defer { prometheus.stop() }

        let links = ["n1", "n2", "n3"].flatMap { publisher in ["n1", "n2", "n3"].filter { $0 != publisher }.map { (publisher, $0) } }
        var last = ""
        let scraped = waitUntil(timeout: 60, interval: 0.5) {
            let up = try prometheus.query("mmlite_node_up"), lag = try prometheus.query("mmlite_link_lag_bytes")
            let lagSeconds = try prometheus.query("mmlite_link_lag_seconds"), linkUp = try prometheus.query("mmlite_link_up")
            last = "up \(up)\nlag \(lag)\nlag seconds \(lagSeconds)\nlink up \(linkUp)"
            return ["n1", "n2", "n3"].allSatisfy { up[["node": $0]] == 1 }
                && links.allSatisfy { lag[["publisher": $0.0, "subscriber": $0.1]] != nil && lagSeconds[["publisher": $0.0, "subscriber": $0.1]] != nil
                    && linkUp[["publisher": $0.0, "subscriber": $0.1]] == 1 }
        }
        #expect(scraped, "Prometheus did not get every node's and link's series:\n\(last)\n\(prometheus.log)")
        // A scrape slower than scrape_timeout on a loaded machine makes one `up` 0: wait for the next.
        #expect(waitUntil(timeout: 20, interval: 0.5) { try prometheus.query("up").values == [1] }, "the exporter target is up")

        // n3 stops: its up series goes to 0, every link to or from it is down, the others keep reporting.
        try mesh[3].stop()
        let stopped = Date()
        let wentDown = waitUntil(timeout: 60, interval: 0.5) {
            let up = try prometheus.query("mmlite_node_up"), linkUp = try prometheus.query("mmlite_link_up")
            let fresh = try prometheus.query("timestamp(mmlite_link_lag_bytes)")
            last = "up \(up)\nlink up \(linkUp)\nlag sample times \(fresh)"
            return up[["node": "n3"]] == 0 && up[["node": "n1"]] == 1 && up[["node": "n2"]] == 1
                && links.allSatisfy { linkUp[["publisher": $0.0, "subscriber": $0.1]] == ($0.0 == "n3" || $0.1 == "n3" ? 0 : 1) }
                && [("n1", "n2"), ("n2", "n1")].allSatisfy { (fresh[["publisher": $0.0, "subscriber": $0.1]] ?? 0) > stopped.timeIntervalSince1970 }
        }
        #expect(wentDown, "after n3 stopped:\n\(last)\n\(prometheus.log)")
        let state = try prometheus.query("mmlite_link_state{state=\"critical\"} == 1")
        #expect(Set(state.samples.map { "\($0.labels["publisher"] ?? "")->\($0.labels["subscriber"] ?? "")" })
                == ["n1->n3", "n2->n3", "n3->n1", "n3->n2"], "critical links: \(state)")
        #expect(waitUntil(timeout: 20, interval: 0.5) { try prometheus.query("up").values == [1] }, "the exporter target itself stays up")
    }

    @Test("a node that accepts connections but never answers is down after --timeout, without holding up the others' series")
    func hangingNode() throws {
        let mesh = try TestMesh(2)
        // A listening socket nobody accepts on: the TCP handshake completes, the server never speaks.
        let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(silent >= 0)
        defer { close(silent) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(silent, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0 && listen(silent, 8) == 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(silent, $0, &length) } }
        let port = UInt16(bigEndian: address.sin_port)
        try mesh.writeConfig(extraNodes: """

            [[nodes]]
            name = "n9"
            dsn = "host=127.0.0.1 port=\(port) dbname=postgres user=postgres password=hush-hush-42"

            """)
        let started = Date()
        let run = mesh.mmlite(["metrics", "--timeout", "2"])
        let seconds = Date().timeIntervalSince(started)
        #expect(run.code == 0, "\(run)")
        #expect(seconds < 6, "metrics took \(seconds) s with a 2 s timeout")
        #expect(run.out.contains(#"mmlite_node_up{mesh="shop",node="n9"} 0"#), "\(run.out)")
        for node in ["n1", "n2"] { #expect(run.out.contains(#"mmlite_node_up{mesh="shop",node="\#(node)"} 1"#), "\(run.out)") }
        #expect(run.out.contains(#"mmlite_node_server_info{mesh="shop",node="n1",server_version=""#))
        #expect(run.out.contains(#"mmlite_link_up{mesh="shop",publisher="n1",subscriber="n9"} 0"#))
        #expect(run.out.contains(#"mmlite_link_up{mesh="shop",publisher="n9",subscriber="n2"} 0"#))
        #expect(!run.all.contains("hush-hush-42"), "the password shows: \(run)")
    }

    @Test("a stuck link: mmlite_link_stuck 1 with its apply errors; after resolve --skip, the conflict log entry by table and kind",
          .enabled(if: resolveInstallations.contains { $0.major == 15 }))
    func stuckLink() throws {
        let mesh = try TestMesh.resolveMesh(try #require(resolveInstallations.first { $0.major == 15 }))
        try mesh.expectReplicates(base: 1)
        try mesh.setLink(from: 1, to: 2, false); try mesh.setLink(from: 2, to: 1, false)
        try mesh[1].execute("INSERT INTO public.people VALUES (1, 'ann@example.org')")
        try mesh[2].execute("INSERT INTO public.people VALUES (2, 'ann@example.org')")
        try mesh.setLink(from: 1, to: 2, true)
        let link = #"mesh="shop",publisher="n1",subscriber="n2""#
        var last = ""
        #expect(waitUntil(timeout: 40, interval: 0.5) {
            last = mesh.mmlite(["metrics"]).out
            let errors = last.split(separator: "\n").first { $0.hasPrefix("mmlite_link_apply_errors_total{\(link)}") }
            return last.contains("mmlite_link_stuck{\(link)} 1") && (errors.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0) >= 2
        }, "n1 -> n2 stuck with apply errors:\n\(last)")
        #expect(last.contains("mmlite_link_up{\(link)} 0"))
        #expect(last.contains("mmlite_link_state{\(link),state=\"critical\"} 1"))
        #expect(last.contains(#"mmlite_link_stuck{mesh="shop",publisher="n2",subscriber="n1"} 0"#), "a disabled link is down, not stuck")

        let resolve = mesh.mmlite(["resolve", "n2", "--skip", "--from", "n1"])
        #expect(resolve.code == 0, "\(resolve)")
        let after = mesh.mmlite(["metrics"]).out
        #expect(after.contains(#"mmlite_conflict_log_entries{mesh="shop",node="n2",table="public.people",kind="apply_error_skipped"} 1"#), "\(after)")
        #expect(after.contains(#"mmlite_conflict_log_rows{mesh="shop",node="n2"} 1"#), "\(after)")
        #expect(waitUntil(timeout: 30, interval: 0.5) { mesh.mmlite(["metrics"]).out.contains("mmlite_link_up{\(link)} 1") }, "n1 -> n2 replicates again")
    }

    @Test("the alert rules in docs/monitoring pass promtool check rules and their unit tests (promtool test rules)")
    func alertRules() throws {
        let folder = repositoryFile("docs/monitoring").path
        let (check, checkOutput) = try spawnAndWait([promtoolBinary, "check", "rules", folder + "/mmlite-alerts.yml"])
        #expect(check == 0, "\(checkOutput)")
        #expect(checkOutput.contains("SUCCESS: 8 rules found"), "\(checkOutput)")
        let (test, testOutput) = try spawnAndWait([promtoolBinary, "test", "rules", folder + "/mmlite-alerts.test.yml"])
        #expect(test == 0, "\(testOutput)")
    }
}

/// A throwaway Prometheus on a free loopback port, scraping one target every second.
final class Prometheus {
    let port: Int
    let child: ChildProcess
    let logPath: String

    init(directory: String, target: ListenAddress) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        port = try freeLoopbackPort()
        let config = directory + "/prometheus.yml"
        try """
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: mmlite
            static_configs:
              - targets: ["\(target)"]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        logPath = directory + "/prometheus.log"
        child = try ChildProcess([prometheusBinary, "--config.file=\(config)", "--storage.tsdb.path=\(directory)/data",
                                  "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"], outputPath: logPath)
        let ready = waitUntil(timeout: 30, interval: 0.2) { child.poll() == nil && (try? get("/-/ready").hasPrefix("Prometheus")) ?? false }
        guard ready else {
            stop()
            throw HarnessError("prometheus did not start: \(log)")
        }
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func stop() {
        guard child.poll() == nil else { return }
        _ = child.kill(SIGTERM)
        if !waitUntil(timeout: 10, { child.poll() != nil }) { _ = child.kill(SIGKILL) }
        _ = child.wait()
    }

    /// An instant query through the HTTP API (/api/v1/query).
    func query(_ expression: String) throws -> QueryResult {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        let body = try get("/api/v1/query?query=" + (expression.addingPercentEncoding(withAllowedCharacters: allowed) ?? expression))
        return try QueryResult(json: body)
    }

    /// GET over a plain socket (HTTP/1.0: the server closes when done).
    func get(_ path: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw HarnessError("connect to prometheus on \(port): \(errno)") }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { throw HarnessError("send: \(errno)") }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            response += buffer[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw HarnessError("no HTTP response from prometheus: \(text)") }
        guard text.hasPrefix("HTTP/1.1 200") || text.hasPrefix("HTTP/1.0 200") else { throw HarnessError("prometheus: \(text)") }
        return String(text[split.upperBound...])
    }
}

/// A vector result of /api/v1/query.
struct QueryResult: CustomStringConvertible {
    struct Sample {
        var labels: [String: String]
        var value: Double
    }
    var samples: [Sample]

    init(json: String) throws {
        guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              object["status"] as? String == "success",
              let data = object["data"] as? [String: Any], let result = data["result"] as? [[String: Any]]
        else { throw HarnessError("unexpected answer from prometheus: \(json)") }
        samples = result.compactMap { entry in
            guard let labels = entry["metric"] as? [String: String], let value = entry["value"] as? [Any],
                  value.count == 2, let text = value[1] as? String, let number = Double(text) else { return nil }
            return Sample(labels: labels, value: number)
        }
    }

    var values: [Double] { samples.map(\.value) }

    /// The value of the one sample whose labels include `labels` (nil: none, or several).
    subscript(_ labels: [String: String]) -> Double? {
        let matching = samples.filter { sample in labels.allSatisfy { sample.labels[$0.key] == $0.value } }
        return matching.count == 1 ? matching[0].value : nil
    }

    var description: String {
        samples.map { sample in
            "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "} \(sample.value)"
        }.joined(separator: "; ")
    }
}
