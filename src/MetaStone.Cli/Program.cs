using MetaStone.Cli;

// Verbs are discovered (see CliRootCommand), so adding one never touches this file.
return await CliRootCommand.RunAsync(args);
