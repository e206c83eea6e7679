// swift-tools-version:6.0
// The server-side half of mmlite: mmlite.so, loaded by PostgreSQL.
//
// Built by the repository's Makefile (`make`, `make install PG_CONFIG=...`),
// which passes the server headers of the PostgreSQL being built for with
// `-Xcc -I$(pg_config --includedir-server)`; build once per major. It also
// passes mmlite's version, read from the repository's VERSION file, as the C
// define MMLITE_VERSION (not read here: SwiftPM caches a manifest's result, so
// an edited VERSION would not reach a define computed in this file).
import PackageDescription

let exportMap = Context.packageDirectory + "/mmlite.map"

let package = Package(
    name: "mmlite-plugin",
    products: [
        .library(name: "mmlite", type: .dynamic, targets: ["MMLitePlugin"]),
    ],
    targets: [
        .target(
            name: "CMMLite",
            cSettings: [
                .unsafeFlags(["-Wno-ignored-attributes"]),
            ]
        ),
        .target(
            name: "MMLitePlugin",
            dependencies: ["CMMLite"],
            swiftSettings: [
                .unsafeFlags(["-static-stdlib", "-Xcc", "-Wno-ignored-attributes"]),
            ],
            linkerSettings: [
                // A dynamic library ignores --static-swift-stdlib; this works.
                .unsafeFlags(["-static-stdlib", "-Xlinker", "--version-script=\(exportMap)"]),
            ]
        ),
    ]
)
