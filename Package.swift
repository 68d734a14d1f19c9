// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Portcullis",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "portcullis", targets: ["portcullis"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // System libraries (apt providers named so SwiftPM can hint at them).
        .systemLibrary(name: "CFastCGI", pkgConfig: "fcgi", providers: [.apt(["libfcgi-dev"])]),
        .systemLibrary(name: "CJansson", pkgConfig: "jansson", providers: [.apt(["libjansson-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CHTTPParser", providers: [.apt(["libhttp-parser-dev"])]),
        // What Swift cannot call directly: curl's variadic setopt/getinfo, shm atomics, signals.
        .target(name: "CPortcullis", dependencies: ["CCurl", "CHiredis"]),
        // Pure decisions, no I/O.
        .target(
            name: "PortcullisCore",
            dependencies: [
                "CJansson",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        // Plugin types: one folder per plugin, its config schema and its handler.
        .target(name: "PortcullisPlugins", dependencies: ["PortcullisCore"]),
        // I/O adapters: FastCGI loop, upstream client, stores, logs.
        .target(
            name: "PortcullisRuntime",
            dependencies: ["PortcullisCore", "PortcullisPlugins", "CFastCGI", "CCurl", "CHiredis", "CHTTPParser", "CPortcullis"]
        ),
        // The master: sockets, shared memory, spawning and supervising workers.
        .target(name: "PortcullisPool", dependencies: ["PortcullisCore", "PortcullisRuntime", "CPortcullis"]),
        .target(
            name: "PortcullisCLI",
            dependencies: [
                "PortcullisCore", "PortcullisPlugins", "PortcullisRuntime", "PortcullisPool",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // mimalloc replaces glibc's malloc for the whole process (libfcgi, the Swift runtime):
        // docs/dependencies.md says why.
        .executableTarget(
            name: "portcullis", dependencies: ["PortcullisCLI"],
            linkerSettings: [.linkedLibrary("mimalloc")]
        ),
        .testTarget(
            name: "PortcullisCoreTests",
            dependencies: ["PortcullisCore", "PortcullisPlugins", "PortcullisRuntime", "PortcullisPool"],
            resources: [.copy("Fixtures")]
        ),
    ]
)
