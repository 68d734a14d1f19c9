import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisRuntime

/// `portcullis nginx-upstreams`: the nginx `http { }` configuration the snippet's WebSocket and
/// gRPC handoff locations need (docs/protocols.md).
struct NginxUpstreamsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nginx-upstreams",
        abstract: "Print the nginx http-level config for websocket/grpc routes: upstream blocks of their targets and the portcullis_handoff log format.")

    @OptionGroup var options: ConfigOption
    @Option(name: .shortAndLong, help: "Write to this file (replaced atomically) instead of standard output.")
    var output: String?

    func run() throws {
        let loaded = try options.load()
        let text = NginxUpstreams.render(loaded.config, source: options.config)
        guard let output else { return print(text, terminator: "") }
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
        } catch {
            printError("cannot write \(output): \(error.localizedDescription)")
            throw ExitCode(1)
        }
    }
}
