// swift-tools-version: 6.2
// The benchmark package: ordo-one/benchmark over Eddy's libraries. Run with
//   cd Benchmarks && swift package benchmark
// It is a package of its own so that `make test` does not build the benchmark harness.
import Foundation
import PackageDescription

/// SwiftPM names a path dependency after its directory, which is whatever the checkout is called.
let eddy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "EddyBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "StoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "StreamModel", package: eddy),
                .product(name: "SegmentStore", package: eddy),
            ],
            path: "Benchmarks/StoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "CacheBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "StreamModel", package: eddy),
                .product(name: "CacheCore", package: eddy),
            ],
            path: "Benchmarks/CacheBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
