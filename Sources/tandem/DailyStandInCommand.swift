import ArgumentParser
import Foundation
import Hummingbird
import Logging
import TandemDailyStandIn
import TandemServer

struct DailyStandInCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daily-standin",
        abstract: "Run a local stand-in of the Daily REST API (rooms and meeting tokens) for tests and demos.",
        discussion: """
            It validates, answers and rate-limits as Daily documents, and signs meeting tokens (HS256) with \
            the API key; GET /v1/meeting-tokens/TOKEN validates one. POST /_standin/faults \
            {latencyMs, failNext, failStatus} injects latency and errors, POST /_standin/clock \
            {advanceSeconds} moves its clock, GET /_standin/stats counts requests.
            """)

    @Option(help: "Address to listen on, HOST:PORT (port 0 picks one; the first line printed says which).")
    var listen = "127.0.0.1:8444"
    @Option(help: "The API key requests must bear (default TANDEM_SFU_API_KEY).")
    var apiKey: String?
    @Option(help: "Latency added to every answer, in milliseconds.")
    var latencyMs = 0
    @Option(help: "Answer the first N requests with --fail-status.")
    var failNext = 0
    @Option(help: "Status of injected failures.")
    var failStatus = 500
    @Option(help: "Requests per second before 429 (Daily: 20).")
    var rateLimit: Double = 20
    @Option(help: "Room deletes per second before 429 (Daily: 2).")
    var deleteRateLimit: Double = 2

    func run() async throws {
        guard let key = apiKey ?? ProcessInfo.processInfo.environment["TANDEM_SFU_API_KEY"] else {
            throw SetupError("give --api-key or TANDEM_SFU_API_KEY")
        }
        try ConfigLoader.checkSecret(key, name: "api-key")
        guard rateLimit > 0, deleteRateLimit > 0 else { throw SetupError("rate limits must be above 0") }
        guard let faults = StandInFaults.validated(latencyMs: latencyMs, failNext: failNext, failStatus: failStatus) else {
            throw SetupError("--fail-status, --fail-next, --latency-ms: \(StandInFaults.limits)")
        }
        let (host, port) = try ConfigLoader.parseListen(listen)
        var logger = Logger(label: "tandem.daily-standin")
        logger.logLevel = .warning
        let app = DailyStandIn.application(
            host: host, port: port, apiKey: key, faults: faults, requestsPerSecond: rateLimit, deletesPerSecond: deleteRateLimit,
            logger: logger
        ) { bound, _ in
            let line = "daily stand-in listening on \(DailyStandIn.address(host: host, port: bound))/v1\n"
            FileHandle.standardOutput.write(Data(line.utf8))
        }
        try await app.runService()
    }
}
