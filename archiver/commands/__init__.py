"""The archiver's commands, one module per command group: parse options, call one function, render."""
