import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import Testing

/// Reads every process's command line (and, for libpq tools, environment)
/// from /proc, over and over, until stopped: what any local user could see.
final class ProcessSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true
    private(set) var leaks: [String] = []
    private(set) var toolsSeen: Set<String> = []
    private let secret: String
    private var thread: Thread?

    init(secret: String) { self.secret = secret }

    /// Forgets what was seen so far.
    func reset() { lock.withLock { leaks = []; toolsSeen = [] } }

    func start() {
        let thread = Thread { [self] in
            while lock.withLock({ running }) { sample() }
        }
        self.thread = thread
        thread.start()
    }

    func stop() {
        lock.withLock { running = false }
        usleep(50_000)
    }

    private func sample() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        for pid in entries where pid.allSatisfy(\.isNumber) {
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { continue }
            let arguments = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            let tool = ["pg_dump", "pg_restore"].first { arguments.contains("/" + $0 + " ") }
            lock.withLock {
                if arguments.contains(secret) { leaks.append("argv of \(pid): \(arguments)") }
                if let tool { toolsSeen.insert(tool) }
            }
            if tool != nil, let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
               String(decoding: environment, as: UTF8.self).contains(secret) {
                lock.withLock { leaks.append("environment of \(pid) (\(arguments))") }
            }
        }
    }
}

@Suite("credentials never on a command line", .enabled(if: installation != nil), .serialized)
struct CredentialTests {
    @Test("join --copy-schema with passwords in the DSNs: no process mmlite starts shows a password in its argv or environment")
    func joinStartsNoProcessWithAPassword() throws {
        let mesh = try TestMesh(3, schema: [3: "SELECT 1"])
        let secret = "Sampled-Pa55-\(UInt32.random(in: 0..<UInt32.max))"
        for index in [1, 3] {
            try mesh[index].execute("CREATE ROLE mmlite_pw LOGIN SUPERUSER PASSWORD '\(secret)'")
            let hba = mesh[index].dataDirectory + "/pg_hba.conf"
            let original = try String(contentsOfFile: hba, encoding: .utf8)
            try ("host all mmlite_pw 127.0.0.1/32 scram-sha-256\n" + original).write(toFile: hba, atomically: false, encoding: .utf8)
            try mesh[index].reload()
        }
        try mesh.writeConfig(members: [1, 2])
        try #require(mesh.mmlite(["apply"]).code == 0)
        let withPassword = { (index: Int) in "host=127.0.0.1 port=\(mesh[index].port) dbname=postgres user=mmlite_pw password=\(secret)" }
        var text = "[mesh]\nname = \"shop\"\ntables = [\"public.users\", \"public.departments\"]\n"
        for index in [1, 2, 3] {
            text += "\n[[nodes]]\nname = \"n\(index)\"\ndsn = \"\(index == 2 ? mesh[2].conninfo : withPassword(index))\"\n"
        }
        try text.write(toFile: mesh.configPath, atomically: true, encoding: .utf8)

        // The sampler catches a process that does carry the password (so a leak could not go unnoticed).
        let sampler = ProcessSampler(secret: secret)
        sampler.start()
        let control = Process()
        control.executableURL = URL(fileURLWithPath: "/bin/sh")
        control.arguments = ["-c", "sleep 0.3", "password=\(secret)"]
        try control.run()
        control.waitUntilExit()
        #expect(!sampler.leaks.isEmpty, "the sampler saw the control process's argv")
        sampler.reset()
        let join = mesh.mmlite(["join", "n3", "--from", "n1", "--copy-schema"])
        sampler.stop()

        #expect(join.code == 0, "\(join)")
        #expect(join.out.contains("Created public.departments, public.users on n3 from n1's definitions"), "\(join)")
        #expect(!join.all.contains(secret), "\(join)")
        #expect(sampler.leaks.isEmpty, "\(sampler.leaks)")
        print("tools seen while sampling: \(sampler.toolsSeen.sorted())")
        #expect(mesh.converged([1, 2, 3]))
        let leftover = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter { $0.hasPrefix("mmlite-pgpass-") }
        #expect(leftover.isEmpty, "password files are removed: \(leftover)")
    }
}
