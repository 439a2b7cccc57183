// swift-tools-version:6.2
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "tandem",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tandem", targets: ["tandem"]),
        .library(name: "TandemServer", targets: ["TandemServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // The media relay's C libraries (Debian: libnice-dev, libssl-dev, libsrtp2-dev, libglib2.0-dev).
        .systemLibrary(name: "CNice", pkgConfig: "nice", providers: [.apt(["libnice-dev", "libglib2.0-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSRTP", pkgConfig: "libsrtp2", providers: [.apt(["libsrtp2-dev"])]),
        // epoll and batched UDP calls for the TURN packet path, which Swift's Glibc module lacks.
        .target(name: "CDatagramIO"),
        // glibc's heap figures and trim, which Swift's Glibc module does not import (malloc.h).
        .target(name: "CHeap"),
        // The media relay's pure parts: SDP, RTP and RTCP rewriting, the leg lifecycle, ICE address
        // rules. No C library, so its tests and fuzz targets build without any.
        .target(name: "TandemMediaCore", swiftSettings: strict),
        // The media relay itself: libnice agents, DTLS, SRTP and the loops that drive them.
        .target(
            name: "TandemMedia",
            dependencies: ["TandemMediaCore", "CNice", "COpenSSL", "CSRTP"],
            swiftSettings: strict
        ),
        // An in-process WebRTC endpoint for driving the relay, shared by its tests and bench/relay.
        .target(name: "TandemMediaTestSupport", dependencies: ["TandemMedia", "TandemMediaCore"], swiftSettings: strict),
        .target(name: "TandemProtocol", exclude: ["PROTOCOL.md"], swiftSettings: strict),
        .target(name: "TandemArbiter", dependencies: ["TandemProtocol"], swiftSettings: strict),
        // HS256 JSON Web Tokens: join tokens, and the Daily stand-in's meeting tokens.
        .target(
            name: "TandemJWT", dependencies: ["TandemProtocol", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        // The SFU adapter: the provider interface and the Daily REST client.
        .target(
            name: "TandemSFU",
            dependencies: [
                "TandemProtocol",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // A local stand-in of Daily's REST API for tests, benchmarks and `tandem serve --dev`.
        .target(
            name: "TandemDailyStandIn",
            dependencies: [
                "TandemProtocol", "TandemJWT",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // STUN: the message codec and the credentials (REST usernames, long-term keys).
        .target(name: "TandemSTUN", dependencies: [.product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        // TURN as a value-type machine (TURNMachine) with its policy, peer filter, port pool and framing. No I/O.
        .target(name: "TandemTURN", dependencies: ["TandemSTUN"], swiftSettings: strict),
        // TURN's I/O: UDP on epoll threads, TCP and TLS on NIO, driving TandemTURN.
        .target(
            name: "TandemTURNService",
            dependencies: [
                "TandemSTUN", "TandemTURN", "CDatagramIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // sockaddr fields come through CNIOLinux, which no product exposes to member lookup.
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        // The browser client and demo page (clients/js), embedded in the binary at build time.
        .executableTarget(name: "tandem-embed", swiftSettings: strict),
        .plugin(name: "EmbedWebAssets", capability: .buildTool(), dependencies: ["tandem-embed"], path: "Sources/EmbedWebAssets"),
        .target(name: "TandemWeb", swiftSettings: strict, plugins: ["EmbedWebAssets"]),
        .target(
            name: "TandemStore",
            dependencies: [
                "TandemProtocol", "TandemArbiter", "CSQLite",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // The store of many nodes: PostgreSQL through postgres-nio's connection pool.
        .target(
            name: "TandemPostgres",
            dependencies: [
                "TandemProtocol", "TandemArbiter", "TandemStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // A PostgreSQL server of the tests' own (Debian's binaries, a new cluster, stopped by PID).
        .target(
            name: "TandemPostgresTestSupport",
            dependencies: ["TandemPostgres", .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "Logging", package: "swift-log")],
            path: "Tests/Support/PostgresServer", swiftSettings: strict),
        .target(
            name: "TandemServer",
            dependencies: [
                "TandemProtocol", "TandemArbiter", "TandemStore", "TandemPostgres", "TandemSTUN", "TandemTURN", "TandemTURNService", "TandemWeb", "TandemMedia", "TandemMediaCore", "TandemJWT",
                "TandemSFU", "TandemDailyStandIn", "CHeap",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "tandem",
            dependencies: [
                "TandemServer", "TandemDailyStandIn",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "tandem-bench-signaling",
            dependencies: [
                "TandemProtocol",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            // The signaling load (bench/signaling) and the soak (bench/soak), one executable.
            path: "bench", sources: ["signaling", "soak"],
            swiftSettings: strict
        ),
        // The relay benchmark and its C floor (bench/relay).
        .target(name: "CRelayFloor", dependencies: ["CSRTP"], path: "bench/relay/floor"),
        .executableTarget(
            name: "tandem-bench-relay", dependencies: ["TandemMedia", "TandemMediaCore", "TandemMediaTestSupport", "CRelayFloor"], path: "bench/relay/main",
            swiftSettings: strict),
        // Fuzzing: the network parsers as targets (replayed by the tests), and the libFuzzer driver.
        // The pure targets link no C library; DTLS's needs OpenSSL and stands apart.
        .target(name: "TandemFuzzTargets", dependencies: ["TandemMediaCore", "TandemProtocol", "TandemSTUN", "TandemTURN"], path: "Tests/Fuzz/Targets", swiftSettings: strict),
        .target(name: "TandemFuzzDTLS", dependencies: ["TandemMedia", "TandemMediaCore"], path: "Tests/Fuzz/DTLSTarget", swiftSettings: strict),
        .executableTarget(name: "tandem-fuzz", dependencies: ["TandemFuzzTargets"], path: "Tests/Fuzz/Main", swiftSettings: strict),
        .testTarget(name: "TandemProtocolTests", dependencies: ["TandemProtocol"], swiftSettings: strict),
        .testTarget(name: "TandemArbiterTests", dependencies: ["TandemArbiter"], swiftSettings: strict),
        .testTarget(
            name: "TandemStoreTests",
            dependencies: ["TandemStore", "TandemPostgres", "TandemPostgresTestSupport", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "TandemSTUNTests", dependencies: ["TandemSTUN", "TandemTURN"], swiftSettings: strict),
        .testTarget(
            name: "TandemSFUTests",
            dependencies: [
                "TandemSFU", "TandemDailyStandIn", "TandemJWT", "TandemProtocol",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "TandemMediaTests",
            dependencies: [
                "TandemMedia", "TandemMediaCore", "TandemMediaTestSupport", "TandemFuzzTargets", "TandemFuzzDTLS",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "TandemServerTests",
            dependencies: [
                "TandemServer", "TandemSTUN", "TandemTURN", "TandemTURNService", "TandemMedia", "TandemMediaCore", "TandemSFU", "TandemDailyStandIn", "TandemJWT",
                "TandemPostgres", "TandemPostgresTestSupport",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
    ]
)
