# An SD card image's partitions (MBR, as scripts/build-image.sh lays it out): sourced by the image's
# boot test and by pi-vm.sh --from-image.

# Partition N's byte offset in the card (sfdisk's dump), for mtools' @@offset and debugfs' ?offset=.
partition_offset() {   # CARD N
    sfdisk -d "$1" | awk -F'[=,]' -v n="$2" '$1 ~ ("[^0-9]" n " *:") {gsub(/ /, "", $2); print $2 * 512}'
}

# Partition N's size in bytes.
partition_bytes() {   # CARD N
    sfdisk -d "$1" | awk -F'[=,]' -v n="$2" '$1 ~ ("[^0-9]" n " *:") {gsub(/ /, "", $4); print $4 * 512}'
}
