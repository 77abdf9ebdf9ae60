<?php
/**
 * Router for PHP's built-in server (`php -S HOST:PORT -t DOCROOT router.php`), standing in
 * for Apache's WordPress rewrite rules:
 *  - an existing file that is not PHP (uploads, CSS, JS) is served as it is (return false);
 *  - an existing .php file, or a folder's index.php (/wp-admin/), is run;
 *  - everything else (/wp-json/..., pretty post links) goes to WordPress's index.php.
 */

$igny8_root = rtrim($_SERVER['DOCUMENT_ROOT'], '/');
$igny8_path = rawurldecode(parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH) ?? '/');
$igny8_script = '/index.php';
if (strpos($igny8_path, '..') === false && strpos($igny8_path, "\0") === false) {
    if (is_file($igny8_root . $igny8_path)) {
        if (substr($igny8_path, -4) !== '.php') {
            return false;
        }
        $igny8_script = $igny8_path;
    } elseif (is_file(rtrim($igny8_root . $igny8_path, '/') . '/index.php')) {
        $igny8_script = rtrim($igny8_path, '/') . '/index.php';
    }
}
// At file scope, not in a function: WordPress's files expect their variables to be global.
$_SERVER['SCRIPT_NAME'] = $igny8_script;
$_SERVER['PHP_SELF'] = $igny8_script;
$_SERVER['SCRIPT_FILENAME'] = $igny8_root . $igny8_script;
chdir(dirname($igny8_root . $igny8_script));
unset($igny8_path);
require $igny8_root . $igny8_script;
