<?php
/**
 * Drop a throwaway WordPress's database (IGNY8_WP_DB_* environment variables).
 *
 * Done from PHP's mysqli, which the WordPress setup installs anyway, so nothing else (a
 * MySQL client, a Python driver) is needed. Dropping a database that is gone is no error.
 */

if (PHP_SAPI !== 'cli') {
    exit(1);
}
ini_set('display_errors', 'stderr');

$name = getenv('IGNY8_WP_DB_NAME') ?: '';
if (!preg_match('/^[A-Za-z0-9_]{1,64}$/', $name)) {
    fwrite(STDERR, "drop-database.php: invalid or missing IGNY8_WP_DB_NAME\n");
    exit(2);
}
[$host, $port] = array_pad(explode(':', getenv('IGNY8_WP_DB_HOST') ?: '127.0.0.1:3306', 2), 2, '3306');
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
$db = new mysqli($host, getenv('IGNY8_WP_DB_USER') ?: 'root', getenv('IGNY8_WP_DB_PASSWORD') ?: '', '', (int) $port);
$db->query("DROP DATABASE IF EXISTS `$name`");
$db->close();
