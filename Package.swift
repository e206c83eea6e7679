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
        // Throwaway PostgreSQL clusters for tests, benchmarks and the sandbox.
        .target(name: "ClusterHarness", dependencies: ["PostgresClient"]),
        // The commands (doctor, apply, status, sandbox) and their I/O; a library
        // so tests can run them in-process.
        .target(
            name: "MMLiteCLI",
            dependencies: [
                "MMLiteCore", "PostgresClient", "ClusterHarness",
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
