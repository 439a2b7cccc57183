import ArgumentParser
import Foundation
import NIOSSL

/// Signaling load: N two-party sessions over wss (joins, an offer/answer/candidate burst per pair, then
/// steady relayed signals with heartbeats) against `tandem serve`, and the same load against a bare
/// WebSocket echo server on the same stack, in one run. Prints the figures and the ratios.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-bench-signaling", abstract: "Signaling load against tandem and a bare wss echo.",
        subcommands: [Run.self, Echo.self, Soak.self], defaultSubcommand: Run.self)

    struct Run: AsyncParsableCommand {
        @Option(help: "Two-party sessions, comma-separated for several sizes (2 connections each).")
        var pairs = "500"
        @Option(help: "Steady relayed messages per second, over all connections.")
        var rate: Double = 5000
        @Option(help: "Seconds of steady load.")
        var seconds = 20
        @Option(help: "Connections being opened at once.")
        var concurrency = 32
        @Option(help: "The tandem executable (release build).")
        var tandem = ".build/release/tandem"
        @Option(help: "Which servers: both, tandem or echo.")
        var target = "both"

        func run() async throws {
            let sizes = pairs.split(separator: ",").compactMap { Int($0) }
            guard !sizes.isEmpty, sizes.allSatisfy({ $0 > 0 }) else { throw ValidationError("--pairs takes positive whole numbers") }
            let me = URL(fileURLWithPath: CommandLine.arguments[0]).path
            let work = NSTemporaryDirectory() + "tandem-bench-\(getpid())"
            try? FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: work) }
            let certs = work + "/certs"
            let tls = try ServerProcess.devCertificates(tandem: tandem, into: certs)

            print("signaling benchmark: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(Int(rate)) msg/s steady for \(seconds) s")
            print("(client and server share the machine; compare tandem with echo within this run only)\n")
            for size in sizes {
                let plan = LoadPlan(pairs: size, rate: rate, steady: .seconds(seconds), connectConcurrency: concurrency)
                var results: [LoadResult] = []
                for echo in [false, true] where target == "both" || target == (echo ? "echo" : "tandem") {
                    let server: ServerProcess
                    if echo {
                        server = try ServerProcess(
                            name: "echo", executable: me,
                            arguments: ["echo", "--cert", certs + "/server.pem", "--key", certs + "/server-key.pem"],
                            portPrefix: "echo listening on ")
                    } else {
                        server = try ServerProcess(
                            name: "tandem", executable: tandem,
                            arguments: [
                                "serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", work, "--store", "memory", "--log-level", "notice",
                                "--rate-limit", "10000", "--rate-burst", "10000", "--max-candidates", "10000",
                            ],
                            portPrefix: "serving https://127.0.0.1:")
                    }
                    let run = LoadRun(plan: plan, server: server, echo: echo, tls: tls, runID: "\(getpid())-\(size)")
                    let result = await run.run()
                    server.stop()
                    results.append(result)
                    Report.print(result)
                }
                if results.count == 2 { Report.compare(tandem: results[0], echo: results[1]) }
            }
        }
    }

    struct Echo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the bare wss echo server (the benchmark starts it itself).")
        @Option var listen = "127.0.0.1:0"
        @Option var cert: String
        @Option var key: String
        @Option(help: "Server ping interval in milliseconds, as tandem's heartbeat.") var ping = 5000

        func run() async throws {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
                throw ValidationError("--listen HOST:PORT")
            }
            try await EchoServer.run(
                host: String(listen[..<colon]), port: port, certificate: cert, key: key, pingInterval: .milliseconds(ping))
        }
    }
}

enum Report {
    static func ms(_ d: Duration) -> String { String(format: "%.2f ms", d.seconds * 1e3) }

    static func us(_ d: Duration) -> String { String(format: "%.1f µs", d.seconds * 1e6) }

    static func print(_ r: LoadResult) {
        Swift.print("[\(r.target)] \(r.connections) connections (\(r.connectFailures) failed)")
        Swift.print(String(format: "  joins/s                    %.0f", r.joinsPerSecond))
        Swift.print(String(format: "  RSS per idle connection    %.1f KB", r.idleRSSPerConnection / 1024))
        Swift.print(String(format: "  burst                      %d messages at %.0f msg/s", r.burstMessages, r.burstMessagesPerSecond))
        Swift.print(String(format: "  steady                     %d messages at %.0f msg/s", r.steadyMessages, r.steadyMessagesPerSecond))
        Swift.print("  latency p50 / p99 / p99.9  \(ms(r.p50)) / \(ms(r.p99)) / \(ms(r.p999))")
        Swift.print(String(format: "  server CPU                 %@ per message, %.0f%% of a core", us(r.serverCPUPerMessage), r.serverCPUShare * 100))
        if let e = r.firstError { Swift.print("  first error: \(e.prefix(300))") }
        Swift.print("")
    }

    static func compare(tandem t: LoadResult, echo e: LoadResult) {
        func ratio(_ a: Double, _ b: Double) -> String { b == 0 ? "n/a" : String(format: "%.2f", a / b) }
        Swift.print("[tandem / echo] \(t.connections) connections")
        Swift.print("  steady throughput ratio    \(ratio(t.steadyMessagesPerSecond, e.steadyMessagesPerSecond))")
        Swift.print("  CPU per message ratio      \(ratio(t.serverCPUPerMessage.seconds, e.serverCPUPerMessage.seconds))")
        Swift.print("  RSS per connection ratio   \(ratio(t.idleRSSPerConnection, e.idleRSSPerConnection))")
        Swift.print("  p99 latency ratio          \(ratio(t.p99.seconds, e.p99.seconds))")
        Swift.print("")
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
