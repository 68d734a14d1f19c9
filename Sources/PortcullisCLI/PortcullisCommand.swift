import ArgumentParser

/// `portcullis`: the gateway's single binary — master, worker and operator CLI.
public struct PortcullisCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "portcullis",
        abstract: "An API gateway that runs behind nginx over FastCGI.",
        // `--version` prints what `portcullis version` prints, so scripts may use either.
        version: VersionCommand.line,
        subcommands: [ServeCommand.self, StopCommand.self, ReloadCommand.self, StatusCommand.self, MetricsCommand.self, ScaleCommand.self,
                      CheckCommand.self, KeysCommand.self, VersionCommand.self, WorkerCommand.self, MicrobenchCommand.self]
    )
    public init() {}
}

/// The `--config` option every command shares.
struct ConfigOption: ParsableArguments {
    @Option(name: .shortAndLong, help: "Gateway configuration file.")
    var config: String = "config/portcullis.json"
}
