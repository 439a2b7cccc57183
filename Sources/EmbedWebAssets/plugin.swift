import Foundation
import PackagePlugin

/// Embeds the browser client (`clients/js/tandem.js`) and the demo page (`clients/js/demo/*`) in the
/// target it is applied to, as `embeddedWebFiles`.
@main
struct EmbedWebAssets: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let client = context.package.directoryURL.appending(path: "clients/js")
        let demo = client.appending(path: "demo")
        let demoFiles = try FileManager.default.contentsOfDirectory(atPath: demo.path())
            .filter { !$0.hasPrefix(".") }
            .sorted()
        var routes: [(String, URL)] = [("/tandem.js", client.appending(path: "tandem.js"))]
        for name in demoFiles {
            let file = demo.appending(path: name)
            routes.append(("/\(name)", file))
            if name == "index.html" { routes.append(("/", file)) }
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedWebFiles.swift")
        return [
            .buildCommand(
                displayName: "Embedding the web client",
                executable: try context.tool(named: "tandem-embed").url,
                arguments: [output.path()] + routes.map { "\($0.0)=\($0.1.path())" },
                inputFiles: routes.map(\.1),
                outputFiles: [output])
        ]
    }
}
