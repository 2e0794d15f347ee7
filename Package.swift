// swift-tools-version: 6.2
import PackageDescription

/// Settings every Eddy target shares: Swift 6 language mode (complete concurrency checking) and
/// warnings treated as errors, so CI fails on the first warning.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .treatAllWarnings(as: .error),
]

/// The eviction policies, the simulator and the traces are compiled with optimization in debug builds too: the
/// tests replay million-request traces through them (against libCacheSim, the what-if shadows), which take
/// minutes at -Onone and seconds optimized. They stay testable (`-enable-testing` works with -O).
let optimizedInDebug: [SwiftSetting] = strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]

/// `EDDY_FUZZ_BUILD=1 swift build --product EddyFuzz` (scripts/fuzz.sh) instruments Eddy's own targets for
/// libFuzzer and AddressSanitizer and leaves the packages it depends on as the debug build made them, so the fuzz
/// build reuses the test build's packages instead of compiling every dependency again (minutes on 2 cores).
let fuzzBuild = Context.environment["EDDY_FUZZ_BUILD"] == "1"
let fuzzInstrumented: [SwiftSetting] = fuzzBuild ? [.unsafeFlags(["-sanitize=fuzzer,address"]), .define("EDDY_FUZZ")] : []
/// The settings of Eddy's own library targets: strict, and instrumented in a fuzz build.
let own: [SwiftSetting] = strict + fuzzInstrumented
/// The same, optimized in debug builds too.
let ownOptimized: [SwiftSetting] = optimizedInDebug + fuzzInstrumented
/// The fuzz entry point's own settings: its main is libFuzzer's (parse-as-library), and it links the sanitizers.
let fuzzMain: [SwiftSetting] = strict + fuzzInstrumented + (fuzzBuild ? [.unsafeFlags(["-parse-as-library"])] : [])
let fuzzLink: [LinkerSetting] = fuzzBuild ? [.unsafeFlags(["-sanitize=fuzzer,address"])] : []

let package = Package(
    name: "Eddy",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "eddy", targets: ["eddy"]),
        .library(name: "StreamModel", targets: ["StreamModel"]),
        .library(name: "SegmentStore", targets: ["SegmentStore"]),
        .library(name: "WireProtocol", targets: ["WireProtocol"]),
        .library(name: "StoreServer", targets: ["StoreServer"]),
        .library(name: "StoreClient", targets: ["StoreClient"]),
        .library(name: "CacheCore", targets: ["CacheCore"]),
        .library(name: "Workloads", targets: ["Workloads"]),
        .library(name: "HashRing", targets: ["HashRing"]),
        .library(name: "CacheNode", targets: ["CacheNode"]),
        .library(name: "Membership", targets: ["Membership"]),
        .library(name: "WriteBack", targets: ["WriteBack"]),
        .library(name: "Coalescing", targets: ["Coalescing"]),
        .library(name: "EddyClient", targets: ["EddyClient"]),
        .library(name: "ObjectStorage", targets: ["ObjectStorage"]),
        .library(name: "WriteBackQueue", targets: ["WriteBackQueue"]),
        .library(name: "EddyConfig", targets: ["EddyConfig"]),
        .library(name: "EddyAdmin", targets: ["EddyAdmin"]),
        .library(name: "EddyGateway", targets: ["EddyGateway"]),
        .library(name: "EtcdGateway", targets: ["EtcdGateway"]),
        .library(name: "EddyAuth", targets: ["EddyAuth"]),
        .library(name: "EddyTLS", targets: ["EddyTLS"]),
        .library(name: "Mirror", targets: ["Mirror"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        // TLS on every link, and the certificates of `eddy up --secure` and the tests (issue 9).
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // The admin HTTP server, the process lifecycle and the metrics (issue 8). Hummingbird's default traits pull in
        // swift-configuration, which Eddy does not use.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries named by the mission, found through pkg-config (Debian's -dev packages).
        .systemLibrary(name: "CIOUring", pkgConfig: "liburing", providers: [.apt(["liburing-dev"])]),
        .systemLibrary(name: "CNUMA", pkgConfig: "numa", providers: [.apt(["libnuma-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // CRC32C with the CPU's instruction (StreamModel falls back to tables without it).
        .target(name: "CChecksum"),
        .target(name: "StreamModel", dependencies: ["CChecksum"], swiftSettings: own),
        .target(
            name: "SegmentStore",
            dependencies: [
                "StreamModel", "CIOUring",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: own
        ),
        // SingleFlight: one job per key however many wait for it (groupcache's singleflight).
        .target(name: "Coalescing", swiftSettings: own),
        .target(
            name: "CacheCore",
            dependencies: ["StreamModel", "Coalescing", "CNUMA", "CZstd", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: ownOptimized
        ),
        .target(
            name: "Workloads", dependencies: ["CacheCore", "StreamModel", "CZlib", "CZstd"],
            swiftSettings: ownOptimized),
        .target(
            name: "WireProtocol",
            dependencies: ["StreamModel", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: own
        ),
        // Tenants, tokens and access control: who a connection is, and what each request needs (docs/security.md).
        .target(
            name: "EddyAuth",
            dependencies: [
                "StreamModel", "WireProtocol",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        // TLS for the listeners and the connections between servers, reloadable, and an in-process authority.
        .target(
            name: "EddyTLS",
            dependencies: [
                "StreamModel", "WireProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: own
        ),
        .target(
            name: "StoreServer",
            dependencies: [
                "SegmentStore", "WireProtocol", "StreamModel", "EddyAuth", "EddyTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: own
        ),
        .target(
            name: "StoreClient",
            dependencies: [
                "WireProtocol", "StreamModel", "EddyTLS", "Coalescing",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        .target(name: "HashRing", dependencies: ["StreamModel"], swiftSettings: own),
        // Object storage: one protocol, a filesystem backend and an S3 backend (SigV4 over AsyncHTTPClient).
        .target(
            name: "ObjectStorage",
            dependencies: [
                "StreamModel", "EddyTLS",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: own
        ),
        // The internal message queue that orchestrates write-back: DRR over QoS classes, leases, retries, dead
        // letters, a journal kept as a stream of the segment store.
        .target(
            name: "WriteBackQueue",
            dependencies: [
                "StreamModel", "WireProtocol", "StoreClient", "ObjectStorage",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: own
        ),
        // Who is in the ring: the static member list with heartbeats, or etcd registrations under a lease; the
        // connections to the peers.
        .target(
            name: "Membership",
            dependencies: [
                "StreamModel", "HashRing", "WireProtocol", "StoreClient", "EtcdGateway", "EddyTLS", "Coalescing",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: own
        ),
        // Write-back: flush planning and workers, block objects, segment manifests, the object side of cold reads,
        // retention, and backup/restore/export of streams.
        .target(
            name: "WriteBack",
            dependencies: [
                "StreamModel", "CacheCore", "WireProtocol", "StoreClient", "ObjectStorage", "WriteBackQueue", "EddyTLS",
                "CZstd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: own
        ),
        .target(
            name: "CacheNode",
            dependencies: [
                "StreamModel", "HashRing", "CacheCore", "Coalescing", "WireProtocol", "StoreClient", "CNUMA", "CZstd",
                "ObjectStorage", "WriteBackQueue", "Membership", "WriteBack", "EddyAuth", "EddyTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: own
        ),
        .target(
            name: "EddyClient",
            dependencies: [
                "StreamModel", "WireProtocol", "StoreClient", "EddyTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        // The configuration file (YAML), its environment variables, and the log handler of the servers.
        .target(
            name: "EddyConfig",
            dependencies: [
                "StreamModel", "WireProtocol", "CacheCore",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: own
        ),
        // The admin HTTP server of stores and nodes (Hummingbird): health, readiness, JSON documents, Prometheus
        // metrics; and the services a server process runs in its ServiceGroup.
        .target(
            name: "EddyAdmin",
            dependencies: [
                "WriteBack", "StreamModel", "CacheNode", "StoreServer", "SegmentStore", "WriteBackQueue", "EddyAuth", "EddyTLS",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        // The HTTP and Server-Sent Events gateway of a node (`--http-listen`): a client of its own node.
        .target(
            name: "EddyGateway",
            dependencies: [
                "EddyAdmin", "EddyAuth", "EddyClient", "EddyTLS", "StreamModel", "WireProtocol",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        // `eddy mirror`: streams copied to another cluster with identical event pointers (issue 29).
        .target(
            name: "Mirror",
            dependencies: [
                "EddyAuth", "EddyClient", "StoreClient", "StreamModel", "WireProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        .executableTarget(
            name: "eddy",
            dependencies: [
                "EddyGateway", "Mirror",
                "Membership", "WriteBack", "StreamModel", "SegmentStore", "WireProtocol", "StoreServer", "StoreClient", "CacheCore", "Workloads",
                "HashRing", "CacheNode", "EddyClient", "CNUMA", "CZstd", "ObjectStorage", "WriteBackQueue", "EddyConfig",
                "EddyAdmin", "EddyAuth", "EddyTLS",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),

        // Test support shared by the test targets (an in-process store, raw sockets); not a product.
        // Every decoder of hostile input as a fuzz target (scripts/fuzz.sh builds EddyFuzz with libFuzzer).
        .target(
            name: "EddyFuzzing",
            dependencies: [
                "WriteBack", "CacheNode", "EddyAuth", "EddyConfig", "SegmentStore", "StreamModel", "WireProtocol", "WriteBackQueue",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        .target(name: "CFuzzDriver"),
        .executableTarget(
            name: "EddyFuzz", dependencies: ["EddyFuzzing", "CFuzzDriver"],
            swiftSettings: fuzzMain, linkerSettings: fuzzLink),
        // The test harness's exec shim (PR_SET_PDEATHSIG, then exec) and a helper process that starts servers
        // through the harness, which the leak test SIGKILLs (Tests/EddyCLITests/HarnessTests.swift).
        .executableTarget(name: "eddy-test-exec"),
        .executableTarget(name: "eddy-test-helper", dependencies: ["EddyTestSupport"], swiftSettings: strict),
        .target(
            name: "EddyTestSupport",
            dependencies: [
                "SegmentStore", "ObjectStorage", "StoreServer", "StoreClient", "WireProtocol", "StreamModel", "EddyAuth",
                "EddyTLS",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        // etcd's v3 JSON gateway over AsyncHTTPClient: leases, keys, ranges and watches for membership (issue 8).
        .target(
            name: "EtcdGateway",
            dependencies: [
                "StreamModel",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: own
        ),
        .testTarget(
            name: "EtcdGatewayTests", dependencies: ["EtcdGateway", "EddyTestSupport", "StreamModel"],
            swiftSettings: strict),
        .testTarget(
            name: "EddyFuzzingTests",
            dependencies: [
                "WriteBack", "EddyFuzzing", "StreamModel", "SegmentStore", "WireProtocol", "WriteBackQueue", "CacheNode", "EddyAuth",
                "EddyConfig", "EddyTestSupport",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "StreamModelTests", dependencies: ["StreamModel"], swiftSettings: strict),
        .testTarget(name: "HashRingTests", dependencies: ["HashRing"], swiftSettings: strict),
        .testTarget(
            name: "WriteBackQueueTests",
            dependencies: [
                "WriteBackQueue", "ObjectStorage", "EddyTestSupport", "StreamModel", "StoreClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ObjectStorageTests",
            dependencies: [
                "ObjectStorage", "EddyTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CacheNodeTests",
            dependencies: [
                "Membership", "WriteBack", "Coalescing", "CacheNode", "EddyClient", "EddyTestSupport", "StoreServer", "StoreClient", "SegmentStore",
                "WireProtocol", "StreamModel", "Workloads", "CacheCore", "ObjectStorage", "EtcdGateway", "HashRing",
                "EddyAuth", "Mirror",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "EddyAdminTests",
            dependencies: [
                "EddyGateway", "EddyClient", "EddyTLS",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "WriteBack", "EddyAdmin", "CacheNode", "EddyTestSupport", "StoreServer", "StoreClient", "SegmentStore", "ObjectStorage",
                "WireProtocol", "StreamModel",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CacheCoreTests", dependencies: ["CacheCore", "Workloads", "CZstd", "EddyTestSupport"],
            swiftSettings: optimizedInDebug),
        .testTarget(
            name: "SegmentStoreTests",
            dependencies: ["SegmentStore", "StreamModel"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "WireProtocolTests",
            dependencies: [
                "WireProtocol", "StreamModel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "StoreServerTests",
            dependencies: [
                "StoreServer", "StoreClient", "SegmentStore", "WireProtocol", "StreamModel", "EddyTestSupport", "EddyAuth",
                "EddyTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "EddyCLITests",
            dependencies: [
                "WriteBack", "StreamModel", "SegmentStore", "EddyClient", "StoreClient", "WireProtocol", "EddyTestSupport",
                "ObjectStorage", "CacheNode", "WriteBackQueue", "EddyConfig", "EtcdGateway", "EddyTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
    ]
)
