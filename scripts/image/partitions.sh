# An SD card image's partitions (MBR, as scripts/build-image.sh lays it out): sourced by the image's
# boot test and by pi-vm.sh --from-image.

# Partition N's start or size (sfdisk's dump: "CARDN : start= S, size= Z, type=T"), in bytes.
partition_field() {   # CARD N start|size
    sfdisk -d "$1" | awk -F'[=,]' -v n="$2" -v field="$3" \
        '$1 ~ ("[^0-9]" n " *:") {i = field == "start" ? 2 : 4; gsub(/ /, "", $i); print $i * 512}'
}

# Partition N's byte offset in the card, for mtools' @@offset and debugfs' ?offset=.
partition_offset() { partition_field "$1" "$2" start; }   # CARD N
partition_bytes() { partition_field "$1" "$2" size; }     # CARD N
