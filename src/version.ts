/** The mirror's version (package.json's), in a leaf module: every command prints it without loading the server. */
export const VERSION = '0.1.0';
