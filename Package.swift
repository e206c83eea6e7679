// swift-tools-version:6.0
// mmlite: the command-line tool, its libraries and the test suite.
// The server-side plugin is a separate package in plugin/ (built by `make`).
import PackageDescription

let package = Package(
    name: "mmlite",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "mmlite", targets: ["mmlite"]),
        .library(name: "PostgresClient", targets: ["PostgresClient"]),
        .library(name: "MMLiteCore", targets: ["MMLiteCore"]),
        .library(name: "LocalCluster", targets: ["LocalCluster"]),
        .library(name: "ClusterHarness", targets: ["ClusterHarness"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // libpq from the system (Debian: libpq-dev).
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // A small Swift API over libpq: connections, queries, COPY, replication.
        .target(name: "PostgresClient", dependencies: ["CLibPQ"]),
        // The text of the VERSION file, the one place mmlite's version is
        // written, embedded by C (#embed): editing VERSION rebuilds it.
        .target(name: "CMMLiteVersion"),
        // Pure logic, no I/O: config, mesh model, names, SQL generation, LSNs, DSN masking.
        .target(name: "MMLiteCore", dependencies: ["CMMLiteVersion", "TOMLKit"]),
        // Local PostgreSQL clusters: find an installation, initdb, start, stop,
        // remove (the sandbox's needs, and the base of ClusterHarness).
        .target(name: "LocalCluster", dependencies: ["PostgresClient"]),
        // Throwaway clusters for tests and benchmarks: temporary folders removed
        // also after a crash, MMLITE_PG_CONFIGS, waiting, log and content checks.
        // Re-exports LocalCluster. Not a dependency of the tool.
        .target(name: "ClusterHarness", dependencies: ["LocalCluster", "PostgresClient"]),
        // The commands (doctor, apply, status, metrics, exporter, conflicts, resolve,
        // join, part, sandbox) and their I/O; a library so tests can run them in-process.
        .target(
            name: "MMLiteCLI",
            dependencies: [
                "MMLiteCore", "PostgresClient", "LocalCluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "mmlite", dependencies: ["MMLiteCLI"]),
        // bench/run: decode, mesh, join and conflict benchmarks on throwaway clusters.
        .executableTarget(name: "mmlite-bench", dependencies: ["ClusterHarness", "PostgresClient"]),
        .testTarget(name: "MMLiteCoreTests", dependencies: ["MMLiteCore"]),
        .testTarget(name: "CLITests", dependencies: ["MMLiteCLI", "MMLiteCore", "PostgresClient", "ClusterHarness"]),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "ClusterHarness"]),
        .testTarget(name: "PluginTests", dependencies: ["PostgresClient", "ClusterHarness"], swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
