import ClusterHarness
import Foundation
import Testing

/// What `make install` put on the server: one self-contained module.
@Suite("Packaging")
struct PackagingTests {
    func run(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test("mmlite.so needs no Swift runtime and exports only what PostgreSQL looks up", arguments: installations)
    func selfContained(_ installation: PGInstallation) throws {
        let module = installation.pkglibdir + "/mmlite.so"
        let libraries = try run(["/usr/bin/ldd", module])
        #expect(!libraries.lowercased().contains("swift"), "\(libraries)")
        #expect(!libraries.contains("not found"), "\(libraries)")
        let exported = try run(["/usr/bin/nm", "-D", "--defined-only", module])
            .split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) }
        #expect(Set(exported) == ["Pg_magic_func", "_PG_output_plugin_init", "pg_finfo_mmlite_version", "mmlite_version",
                                  "pg_finfo_mmlite_apply_change", "mmlite_apply_change",
                                  "pg_finfo_mmlite_capture_change", "mmlite_capture_change"])
    }

    @Test("CREATE EXTENSION mmlite and mmlite.version()", arguments: installations)
    func extensionVersion(_ installation: PGInstallation) throws {
        try withClusters(1, installation, schema: false) { nodes in
            try nodes[0].execute("CREATE EXTENSION mmlite")
            #expect(try nodes[0].scalar("SELECT mmlite.version()")?.hasPrefix("mmlite ") == true)
            // The one place the version is written: the repository's VERSION file.
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let version = try String(contentsOf: root.appendingPathComponent("VERSION"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try nodes[0].scalar("SELECT mmlite.version()") == "mmlite " + version)
            #expect(try nodes[0].scalar("SELECT extversion FROM pg_extension WHERE extname = 'mmlite'") == version)
        }
    }
}
