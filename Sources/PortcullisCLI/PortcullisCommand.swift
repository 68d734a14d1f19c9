import ArgumentParser
import PortcullisRuntime

/// `portcullis`: the gateway's single binary — master, worker and operator CLI.
public struct PortcullisCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "portcullis",
        abstract: "An API gateway that runs behind nginx over FastCGI.",
        // `--version` prints what `portcullis version` prints, so scripts may use either.
        version: VersionCommand.line,
        subcommands: [ServeCommand.self, StopCommand.self, ReloadCommand.self, StatusCommand.self, MetricsCommand.self, ScaleCommand.self,
                      CheckCommand.self, NginxUpstreamsCommand.self, KeysCommand.self, VersionCommand.self, WorkerCommand.self, MicrobenchCommand.self]
    )
    public init() {}
}

/// The `--config` option every command shares.
struct ConfigOption: ParsableArguments {
    @Option(name: .shortAndLong, help: "Gateway configuration file.")
    var config: String = "config/portcullis.json"

    /// The configuration and the files it names, validated; every problem printed and exit 1
    /// when it is not valid.
    func load() throws -> LoadedGateway {
        do {
            return try GatewayLoader.load(configPath: config)
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
    }
}
