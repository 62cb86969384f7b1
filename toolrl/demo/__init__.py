"""The embedded demo (`toolrl demo`) and the miniature experiments (`toolrl experiments`)."""
