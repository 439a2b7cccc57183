import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import TandemServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the server.",
        usage: "tandem serve [--SETTING [VALUE]] ...",
        discussion: Setting.helpText())

    /// The settings as given; each is declared in `Setting.all`, which also makes the help above.
    @Argument(parsing: .captureForPassthrough, help: ArgumentHelp(visibility: .hidden))
    var arguments: [String] = []

    /// Parses the settings before `run`, so that a mistake is a usage error.
    func validate() throws {
        // `--help` after a setting reaches here: it is only recognized first.
        if arguments.contains(where: { $0 == "--help" || $0 == "-h" }) { throw CleanExit.helpRequest(self) }
        do {
            _ = try Setting.parse(arguments: arguments)
        } catch let error as SetupError {
            throw ValidationError(error.message)
        }
    }

    func run() async throws {
        let flags = try Setting.parse(arguments: arguments)
        let loader = try ConfigLoader(flags: flags, environment: ProcessInfo.processInfo.environment, configFile: nil)
        let loaded = try loader.load()
        guard let level = Logger.Level(rawValue: loader.setting("log-level") ?? "info") else {
            throw SetupError("log-level must be trace, debug, info, notice, warning, error or critical")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "tandem")
        logger.logLevel = level
        let metrics = ServerMetrics()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: metrics.registry))
        for note in loaded.notes { logger.notice("\(note)") }
        let config = loaded.config
        let store = try await openStore(config.store, logger: logger)
        let server = try buildServer(config, logger: logger, metrics: metrics, store: store) { [logger] port in
            let scheme = config.tls == .disabled ? "http" : "https"
            logger.notice("tandem \(config.version) serving \(scheme)://\(config.host):\(port) (signaling at /v1/signal, store \(config.store))")
        }
        // SIGHUP: read the TLS certificate and key again (a renewed certificate without a restart).
        signal(SIGHUP, SIG_IGN)
        let hangUp = DispatchSource.makeSignalSource(signal: SIGHUP)
        hangUp.setEventHandler { [logger, certificates = server.certificates] in
            guard let certificates else { return logger.notice("SIGHUP: no TLS certificate to read again") }
            do {
                try certificates.reload()
                logger.notice("SIGHUP: read the TLS certificate \(certificates.certificatePath) again")
            } catch {
                logger.error("SIGHUP: kept the TLS certificate in use: \(error)")
            }
        }
        hangUp.resume()
        defer { hangUp.cancel() }
        // SIGTERM or SIGINT drains first: sockets are told to resume elsewhere (4000) while the server
        // still runs, and only once they have closed (or drain-timeout has passed) does it stop. A second
        // signal stops it at once.
        let group = ServiceGroup(configuration: .init(services: [.init(service: server.application)], logger: logger))
        let stops = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { [hub = server.hub, logger] in
                if hub.isDraining {
                    logger.notice("stopping now")
                    Foundation.exit(0)
                }
                logger.notice("draining: sockets are told to resume on another node; a second signal stops at once")
                hub.drain()
                Task {
                    await hub.socketsClosed(within: config.drainTimeout)
                    await group.triggerGracefulShutdown()
                }
            }
            source.resume()
            return source
        }
        defer { for source in stops { source.cancel() } }
        try await group.run()
    }
}
